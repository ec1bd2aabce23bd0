//! `bootcmd`: commands run on the host before any service starts, once per
//! boot. A string runs under `/bin/sh -c` (busybox on the OS image), a list
//! is the argv itself. Output goes to berthd's log line by line; a command
//! that fails or runs past [`TIMEOUT`] is reported and the next one runs.

use std::time::Duration;

use berth_configs::forms::Command;

use super::{HostOps, HostPaths, Problem, Report};

/// How long one bootcmd may hold up boot before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(300);

const MARKER: &str = "bootcmd.done";

pub(crate) fn bootcmd(
    ops: &dyn HostOps,
    paths: &HostPaths,
    commands: &[Command],
    report: &mut Report,
) {
    if commands.is_empty() {
        return;
    }
    let marker = paths.state.join(MARKER);
    if marker.exists() {
        log::info!("bootcmd: already ran this boot (berthd restarted)");
        return;
    }
    // Marked before running: a command that makes berthd die must not run
    // again each time PID 1 restarts it.
    if let Err(e) = std::fs::create_dir_all(&paths.state).and_then(|()| std::fs::write(&marker, ""))
    {
        log::warn!(
            "bootcmd: {}: {e}; a restarted berthd would run bootcmd again",
            marker.display()
        );
    }
    for (i, command) in commands.iter().enumerate() {
        let field = format!("bootcmd[{i}]");
        let argv = command.argv();
        if argv.is_empty() || argv[0].is_empty() {
            report.problems.push(Problem::new(field, "empty command"));
            continue;
        }
        log::info!("{field}: running {}", shown(&argv));
        match ops.run_command(&argv, TIMEOUT) {
            Err(e) => report
                .problems
                .push(Problem::new(field, format!("{}: {e}", argv[0]))),
            Ok(out) => {
                for line in out.output.lines() {
                    log::info!("{field}: {line}");
                }
                match out.exit {
                    Some(exit) if exit.success() => report.done(format!("{field}: done")),
                    Some(exit) => report
                        .problems
                        .push(Problem::new(field, format!("{}: {exit}", shown(&argv)))),
                    None => report.problems.push(Problem::new(
                        field,
                        format!("{}: killed after {}s", shown(&argv), TIMEOUT.as_secs()),
                    )),
                }
            }
        }
    }
}

/// A command line for the log.
pub(crate) fn shown(argv: &[String]) -> String {
    match argv {
        [sh, c, script] if sh == "/bin/sh" && c == "-c" => script.clone(),
        _ => format!("{argv:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::recording::Call;
    use super::super::testing::root;
    use super::super::Recording;
    use super::*;
    use crate::runtime::Exit;

    #[test]
    fn strings_go_to_sh_lists_are_argv_and_failures_do_not_stop_the_rest() {
        let r = root();
        let ops = Recording::default();
        ops.script("false", Some(Exit::Code(1)), "nope\n");
        ops.script("sleep", None, "");
        let commands = vec![
            Command::Shell("echo hi > /run/x".into()),
            Command::Exec(vec!["/usr/bin/false".into(), "--x".into()]),
            Command::Exec(vec!["sleep".into(), "999".into()]),
            Command::Exec(vec![]),
            Command::Shell("echo last".into()),
        ];
        let mut report = Report::default();
        bootcmd(&ops, &r.paths, &commands, &mut report);
        let argvs: Vec<Vec<String>> = ops
            .calls()
            .into_iter()
            .map(|c| match c {
                Call::Run { argv } => argv,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            argvs,
            [
                vec![
                    "/bin/sh".to_string(),
                    "-c".into(),
                    "echo hi > /run/x".into()
                ],
                vec!["/usr/bin/false".into(), "--x".into()],
                vec!["sleep".into(), "999".into()],
                vec!["/bin/sh".into(), "-c".into(), "echo last".into()],
            ]
        );
        let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("bootcmd[1]: ") && problems[0].contains("exit code 1"));
        assert!(problems[1].starts_with("bootcmd[2]: ") && problems[1].contains("killed"));
        assert!(problems[2].starts_with("bootcmd[3]: "));

        // Once per boot.
        let ops = Recording::default();
        bootcmd(&ops, &r.paths, &commands, &mut Report::default());
        assert!(ops.calls().is_empty());
    }
}
