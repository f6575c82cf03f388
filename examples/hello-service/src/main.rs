//! Run with: cargo run -p hello-service [-- --for 5s] [-- --config path.toml]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use archon_core::logging;

struct Args {
    run_for: Option<Duration>,
    config: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        run_for: None,
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--for" => {
                let text = it.next().ok_or("--for needs a duration, e.g. --for 5s")?;
                let duration = humantime::parse_duration(&text)
                    .map_err(|e| format!("--for {text}: {e} (expected e.g. 5s, 1m)"))?;
                args.run_for = Some(duration);
            }
            "--config" => {
                let path = it.next().ok_or("--config needs a path")?;
                args.config = Some(PathBuf::from(path));
            }
            "-h" | "--help" => {
                return Err(
                    "usage: hello-service [--for <duration>] [--config <file.toml>]".into(),
                );
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("hello-service: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let config = hello_service::load_config(args.config.as_deref()).map_err(|e| e.to_string())?;
    let info = config.service_info();
    logging::init(&info, &config.log).map_err(|e| e.to_string())?;

    let app = hello_service::start(&config)
        .await
        .map_err(|e| e.to_string())?;
    app.shutdown
        .listen_for_signals()
        .map_err(|e| e.to_string())?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{} {} listening: http://{} (try /livez, /readyz), gRPC health on {}. Ctrl-C to stop.",
            info.name, info.version, app.http_addr, app.grpc_addr
        );
    }
    if let Some(duration) = args.run_for {
        let shutdown = app.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            tracing::info!(after = ?duration, "--for elapsed; shutting down");
            shutdown.trigger();
        });
    }
    let report = app.run().await.map_err(|e| e.to_string())?;
    tracing::info!(elapsed = ?report.elapsed, cut = report.cut, "stopped cleanly");
    Ok(())
}
