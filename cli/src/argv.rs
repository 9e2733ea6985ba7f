//! A role's parsed arguments rendered back to the command line that parses
//! to them, so that each role's flags are defined once, by its clap
//! struct (`KvsArgs`, `RouteArgs`, `SchedulerArgs`, `CacheArgs`,
//! `ExecutorArgs`, `MonitorArgs`, `GatewayArgs`), both to parse them and, in `launch.rs`,
//! to start the process.
//!
//! [`render`] walks the flags clap knows for the struct and takes each
//! one's value from the struct's serde form, by the flag's id (the field's
//! name): absent (`None`) gives nothing, `true` the bare flag, a list the
//! flag once per item, anything else the flag and its value. The tests
//! parse what every role renders and expect the same struct back.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

/// `command` (the subcommand) and then `args` as flags, in the order the
/// struct declares them.
///
/// Fails for a value with no text form (a path that is not UTF-8). A field
/// that is not a `--long` flag, or whose value is not a string, number,
/// boolean or list of those, is a mistake in a role's struct: an error
/// too, and one the tests below catch.
pub(crate) fn render<A: clap::Args + Serialize>(command: &str, args: &A) -> Result<Vec<String>> {
    let flags = A::augment_args(clap::Command::new("role"));
    let value = serde_json::to_value(args)
        .with_context(|| format!("rendering the arguments of `{command}`"))?;
    let Value::Object(mut fields) = value else {
        bail!("the arguments of `{command}` are not a map");
    };
    let mut out = vec![command.to_string()];
    for flag in flags.get_arguments() {
        let Some(value) = fields.remove(flag.get_id().as_str()) else {
            continue;
        };
        let Some(long) = flag.get_long() else {
            bail!("`{command}` argument {} has no --long", flag.get_id());
        };
        let values = match value {
            Value::Null | Value::Bool(false) => Vec::new(),
            Value::Bool(true) => vec![None],
            Value::Array(items) => items.into_iter().map(Some).collect(),
            one => vec![Some(one)],
        };
        for v in values {
            out.push(format!("--{long}"));
            match v {
                None => {}
                Some(Value::String(s)) => out.push(s),
                Some(Value::Number(n)) => out.push(n.to_string()),
                Some(other) => bail!("`{command}` --{long}: cannot render {other}"),
            }
        }
    }
    if !fields.is_empty() {
        bail!(
            "`{command}` fields with no flag: {:?}",
            fields.keys().collect::<Vec<_>>()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::compute::{CacheArgs, ExecutorArgs, SchedulerArgs};
    use crate::monitor::{MonitorArgs, ProviderKind};
    use crate::roles::{KvsArgs, RouteArgs};
    use crate::{Cli, Command};
    use clap::Parser;
    use std::path::PathBuf;

    fn parse(argv: anyhow::Result<Vec<String>>) -> Command {
        let argv = argv.expect("rendering");
        let line = argv.join(" ");
        let argv = std::iter::once("squall".to_string()).chain(argv);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("`squall {line}` does not parse: {e}"),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_role_parses_back_what_it_renders() {
        let kvs = KvsArgs {
            id: 3,
            threads: Some(2),
            host: "10.0.0.1".into(),
            port: 7100,
            routers: strings(&["tcp://10.0.0.1:7000", "tcp://10.0.0.1:7001"]),
            data_dir: Some("/var/lib/squall/node-3".into()),
            direct_port: Some(7110),
            no_direct: false,
        };
        assert!(matches!(parse(kvs.to_args()), Command::Kvs(p) if p == kvs));
        let kvs = KvsArgs {
            threads: None,
            data_dir: None,
            direct_port: None,
            no_direct: true,
            ..kvs
        };
        assert!(matches!(parse(kvs.to_args()), Command::Kvs(p) if p == kvs));

        let route = RouteArgs {
            host: "127.0.0.1".into(),
            port: 7000,
            peers: strings(&["tcp://127.0.0.1:7001"]),
        };
        assert!(matches!(parse(route.to_args()), Command::Route(p) if p == route));
        let route = RouteArgs {
            peers: Vec::new(),
            ..route
        };
        assert!(matches!(parse(route.to_args()), Command::Route(p) if p == route));

        let scheduler = SchedulerArgs {
            host: "127.0.0.2".into(),
            port: 7050,
            routers: strings(&["tcp://127.0.0.1:7000"]),
        };
        assert!(matches!(parse(scheduler.to_args()), Command::Scheduler(p) if p == scheduler));

        let cache = CacheArgs {
            node: "compute-1".into(),
            host: "127.0.0.1".into(),
            port: 7420,
            ipc: "ipc:///tmp/state/cache-1.sock".into(),
            routers: strings(&["tcp://127.0.0.1:7000"]),
            schedulers: strings(&["tcp://127.0.0.1:7050", "tcp://127.0.0.1:7051"]),
        };
        assert!(matches!(parse(cache.to_args()), Command::Cache(p) if p == cache));

        let executor = ExecutorArgs {
            node: "compute-1".into(),
            host: "127.0.0.1".into(),
            port: 7421,
            cache: "ipc:///tmp/state/cache-1.sock".into(),
            schedulers: strings(&["tcp://127.0.0.1:7050"]),
            venv: Some(PathBuf::from("/work/.venv")),
            python_path: vec![PathBuf::from("/a"), PathBuf::from("/b c")],
            no_supervisor: true,
        };
        assert!(matches!(parse(executor.to_args()), Command::Executor(p) if p == executor));
        let executor = ExecutorArgs {
            venv: None,
            python_path: Vec::new(),
            no_supervisor: false,
            ..executor
        };
        assert!(matches!(parse(executor.to_args()), Command::Executor(p) if p == executor));

        for provider in [
            ProviderKind::Local,
            ProviderKind::Kubernetes,
            ProviderKind::None,
        ] {
            let monitor = MonitorArgs {
                host: "127.0.0.1".into(),
                port: 7060,
                metrics: "127.0.0.1:7061".into(),
                routers: strings(&["tcp://127.0.0.1:7000"]),
                schedulers: strings(&["tcp://127.0.0.1:7050"]),
                provider,
                min_storage_nodes: Some(2),
                min_compute_nodes: None,
            };
            assert!(matches!(parse(monitor.to_args()), Command::Monitor(p) if p == monitor));
        }

        let gateway = crate::gateway::GatewayArgs {
            listen: "127.0.0.1:7062".into(),
            routers: strings(&["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"]),
            schedulers: strings(&["tcp://127.0.0.1:7050"]),
            bind_host: "127.0.0.1".into(),
            connections: 8,
            call_timeout: 30,
        };
        assert!(matches!(parse(gateway.to_args()), Command::Gateway(p) if p == gateway));
    }

    #[test]
    fn flags_come_in_declaration_order() {
        let kvs = KvsArgs {
            id: 1,
            threads: Some(4),
            host: "127.0.0.1".into(),
            port: 7100,
            routers: strings(&["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"]),
            data_dir: None,
            direct_port: None,
            no_direct: false,
        };
        assert_eq!(
            kvs.to_args().unwrap(),
            strings(&[
                "kvs",
                "--id",
                "1",
                "--threads",
                "4",
                "--host",
                "127.0.0.1",
                "--port",
                "7100",
                "--router",
                "tcp://127.0.0.1:7000",
                "--router",
                "tcp://127.0.0.1:7001",
            ])
        );
    }
}
