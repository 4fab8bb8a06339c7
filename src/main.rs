use clap::Parser;

fn main() {
    let cli = hearth::cli::Cli::parse();
    hearth::init_logging();
    match hearth::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hearth: {e:#}");
            std::process::exit(1);
        }
    }
}
