//! `layerzero`: LayerZero's command-line tool.
//!
//! `layerzero run` is the main job: a stack of Llama-style decoder layers on the embedded
//! CPU backend, every operation through the dispatcher and checked against float64.
//! `validate`, `explain`, `diff`, `schema`, `kernels`, `bench` and `info` are an
//! operator's everyday tools. Exit codes: 0 ok, 1 invalid input or a failed check, 2 usage
//! or I/O error.

#![forbid(unsafe_code)]

mod bench;
mod diff;
mod dispatcher;
mod error;
mod explain;
mod info;
mod kernels;
mod run;
mod schema;
mod table;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use layerzero::registry::get_global_kernel_registry;

use error::CliError;

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 the input is invalid or a check failed; 2 usage or I/O error.";

#[derive(Parser)]
#[command(name = "layerzero", version, about = "Kernel dispatch for GPU inference", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run decoder layers (prefill, then decode steps) with every operation dispatched and
    /// checked against a float64 reference.
    #[command(after_help = run::FILES_AND_EXIT_CODES)]
    Run(Box<run::RunArgs>),
    /// Check rules files: every schema error and lint warning, as FILE:LINE:COL: PATH: MESSAGE.
    #[command(after_help = EXIT_CODES)]
    Validate {
        /// Rules files (YAML or JSON, schema v1.0).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Explain which kernel a rules file selects for one operation and context, and why.
    #[command(after_help = EXIT_CODES)]
    Explain {
        /// Rules file (YAML or JSON, schema v1.0).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Kernel catalog (`kernels: [...]` specs); default: the built-in kernels. Every
        /// backend the kernels name is assumed present.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// The operation (`attention.causal`, `rms_norm`, ...).
        #[arg(long = "op", value_name = "OP")]
        operation: String,
        /// A context field, repeatable: `--set batch_size=16 --set dtype=bfloat16`.
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        settings: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the registered kernels, their constraints and whether their backend is available.
    #[command(after_help = EXIT_CODES)]
    Kernels {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show which selections a new rules file changes over a workload of (operation,
    /// context) cases.
    #[command(after_help = EXIT_CODES)]
    Diff {
        /// The rules file in use.
        old: PathBuf,
        /// The rules file proposed.
        new: PathBuf,
        /// YAML list of cases: `- {name: .., operation: OP, context: {FIELD: VALUE, ..}}`.
        #[arg(long, value_name = "FILE")]
        workload: PathBuf,
        /// Kernel catalog; default: the built-in kernels (every backend assumed present).
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure dispatch overhead per mode and each built-in kernel's time on this machine.
    #[command(after_help = EXIT_CODES)]
    Bench {
        /// Also measure CONFIG mode with this rules file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Time spent measuring each row, in milliseconds.
        #[arg(long, default_value_t = 100, value_name = "MS")]
        time_ms: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of rules files (schema v1.0), for editors and CI.
    #[command(after_help = EXIT_CODES)]
    Schema,
    /// Show the registered kernels and this machine's backends.
    #[command(after_help = EXIT_CODES)]
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap's usage errors exit 2; --help and --version are not errors.
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // The CPU kernels are the embedded default: every build has them.
    if let Err(e) = layerzero::kernels::register_cpu_kernels(get_global_kernel_registry()) {
        eprintln!("layerzero: registering the CPU kernels: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Validate { files, json } => validate::validate(&files, json),
        Command::Explain { config, catalog, operation, settings, json } => explain::explain(&explain::ExplainArgs {
            config: &config,
            catalog: catalog.as_ref(),
            operation: &operation,
            settings: &settings,
            json,
        }),
        Command::Kernels { json } => kernels::kernels(json),
        Command::Schema => schema::schema(),
        Command::Bench { config, time_ms, json } => bench::bench(config, time_ms, json),
        Command::Diff { old, new, workload, catalog, json } => {
            diff::diff(&diff::DiffArgs { old: &old, new: &new, workload: &workload, catalog: catalog.as_ref(), json })
        }
        Command::Info { json } => info::info(json).map_err(CliError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message().is_empty() {
                eprintln!("layerzero: {}", e.message());
            }
            ExitCode::from(e.exit_code())
        }
    }
}
