//! The entry point's dispatch: a parsed command line becomes a checked configuration
//! (`config`), which goes to the module that carries the command out. Fatal errors are
//! printed here; `main` only exits with the code.

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::config;
use crate::exit::{Exit, Fatal};

/// Carry out a parsed command.
pub fn execute(cli: Cli) -> Exit {
    match dispatch(cli) {
        Ok(exit) => exit,
        Err(fatal) => {
            eprintln!("{fatal}");
            Exit::Fatal
        }
    }
}

fn dispatch(cli: Cli) -> Result<Exit, Fatal> {
    let before = &cli.db_before_command;
    match cli.command {
        Command::Check(args) => {
            crate::check::run(&args.manifest, args.json, args.preflight, args.shards)
        }
        Command::Status(args) => {
            crate::view::status(&config::database(before, &args.db), args.json)
        }
        Command::Export(args) => {
            crate::view::export(&config::database(before, &args.db), args.out.as_deref())
        }
        Command::Simulate(args) => crate::simulator::run_cli(args.listen, args.knobs),
        Command::Run(args) => {
            let interactive = !cli.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let db = config::database(before, &args.db);
            let config = crate::run::RunConfig::from_args(&args, db, interactive)?;
            crate::run::command(&config)
        }
        Command::Demo(args) => crate::demo::command(&args.out, args.manifest.as_deref()),
        Command::Retry(args) => {
            let request = config::retry_request(&args)?;
            crate::retry::command(&config::database(before, &args.db), &request)
        }
        Command::Report(args) => {
            crate::view::report(&config::database(before, &args.db), &args.out)
        }
        Command::Recover(args) => {
            let db = config::database(before, &args.db);
            let options = crate::recover::RecoverOptions::default();
            match crate::recover::recover(&args.manifest, &db, &options) {
                Ok(report) => {
                    print!("{report}");
                    eprintln!("recovered; run the same `run` command again to finish the batch");
                    Ok(Exit::Success)
                }
                Err(error) => Err(crate::recover::fatal(error, &db, &args.manifest)),
            }
        }
        Command::Completions(args) => {
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "headswap-batch", &mut out);
            crate::view::write_stdout(&out)?;
            Ok(Exit::Success)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|error| Fatal::new("cannot write the man page").cause(error))?;
            crate::view::write_stdout(&out)?;
            Ok(Exit::Success)
        }
    }
}
