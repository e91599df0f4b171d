//! The breaker's state word: everything the state machine decides on, in one `u64`, so that
//! every transition is a single compare-and-swap and no reader can see half of one.
//!
//! ```text
//!  63                 34 33        18 17         2 1  0
//! +---------------------+------------+------------+----+
//! |  generation (30 b)  | count B    | count A    |kind|
//! +---------------------+------------+------------+----+
//! CLOSED:      A = consecutive failures                 B = 0
//! OPEN:        A = 0                                    B = 0
//! HALF_OPEN:   A = trial calls in flight                B = trial successes
//! FORCED_OPEN: A = 0                                    B = 0
//! ```
//!
//! The generation goes up by one at every transition (wrapping after 2^30), so a permit knows
//! whether the episode that admitted it is still the current one, and a compare-and-swap
//! from a stale word fails even if the kind and counts happen to match again (ABA would
//! need exactly 2^30 transitions between a thread's load and its CAS).

use crate::CircuitState;

const KIND_MASK: u64 = 0b11;
const COUNT_MASK: u64 = 0xFFFF;
const A_SHIFT: u32 = 2;
const B_SHIFT: u32 = 18;
const GEN_SHIFT: u32 = 34;
/// Generations wrap at this many.
pub(crate) const GEN_MASK: u32 = (1 << 30) - 1;

/// The kinds of state the word can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
    /// OPEN by [`force_open`](crate::CircuitBreaker::force_open): no cooldown, no reset
    /// timeout; only [`reset`](crate::CircuitBreaker::reset) leaves it.
    ForcedOpen = 3,
}

impl Kind {
    pub(crate) fn public(self) -> CircuitState {
        match self {
            Kind::Closed => CircuitState::Closed,
            Kind::Open | Kind::ForcedOpen => CircuitState::Open,
            Kind::HalfOpen => CircuitState::HalfOpen,
        }
    }
}

/// A decoded view of the state word. Counts fit in 16 bits because the config's counts do
/// (`MAX_COUNT`), and the state machine never lets A or B reach its threshold without
/// leaving the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    pub(crate) const INITIAL: Word = Word(0);

    fn pack(kind: Kind, a: u32, b: u32, generation: u32) -> Word {
        Word(
            kind as u64
                | (u64::from(a) & COUNT_MASK) << A_SHIFT
                | (u64::from(b) & COUNT_MASK) << B_SHIFT
                | u64::from(generation & GEN_MASK) << GEN_SHIFT,
        )
    }

    pub(crate) fn kind(self) -> Kind {
        match self.0 & KIND_MASK {
            0 => Kind::Closed,
            1 => Kind::Open,
            2 => Kind::HalfOpen,
            _ => Kind::ForcedOpen,
        }
    }

    #[inline]
    pub(crate) fn is_closed(self) -> bool {
        self.0 & KIND_MASK == Kind::Closed as u64
    }

    /// CLOSED: consecutive failures. HALF_OPEN: trial calls in flight.
    #[inline]
    pub(crate) fn a(self) -> u32 {
        ((self.0 >> A_SHIFT) & COUNT_MASK) as u32
    }

    /// HALF_OPEN: trial successes.
    pub(crate) fn b(self) -> u32 {
        ((self.0 >> B_SHIFT) & COUNT_MASK) as u32
    }

    #[inline]
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32 & GEN_MASK
    }

    /// The same episode with other counts.
    pub(crate) fn with_counts(self, a: u32, b: u32) -> Word {
        Word::pack(self.kind(), a, b, self.generation())
    }

    /// The first word of the next episode.
    pub(crate) fn next(self, kind: Kind) -> Word {
        Word::pack(kind, 0, 0, self.generation().wrapping_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_at_their_limits() {
        let word = Word::pack(Kind::HalfOpen, 0xFFFF, 0xFFFE, GEN_MASK);
        assert_eq!((word.kind(), word.a(), word.b(), word.generation()), (Kind::HalfOpen, 0xFFFF, 0xFFFE, GEN_MASK));
        let next = word.next(Kind::Closed);
        assert_eq!((next.kind(), next.a(), next.b(), next.generation()), (Kind::Closed, 0, 0, 0));
        assert!(next.is_closed());
    }

    #[test]
    fn with_counts_keeps_the_episode() {
        let word = Word::INITIAL.next(Kind::HalfOpen).with_counts(2, 1);
        assert_eq!((word.kind(), word.a(), word.b(), word.generation()), (Kind::HalfOpen, 2, 1, 1));
    }
}
