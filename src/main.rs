use clap::Parser;

fn main() {
    let cli = hearth::cli::Cli::parse();
    hearth::init_logging();
    let verbose = cli.verbose;
    match hearth::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hearth: {}", hearth::cli::describe(&e, verbose));
            std::process::exit(1);
        }
    }
}
