//! `jwksd <command> --help`: the admin-client options appear only with the
//! commands that reach a running daemon, under their own heading, apart from
//! the command's own options.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jwksd");
const HEADING: &str = "Admin client options (reaching a running daemon):";
const CLIENT: &[&str] = &[
    "--admin-url",
    "--tls-ca",
    "--tls-client-cert",
    "--tls-client-key",
];

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--help")
        .env_remove("JWKSD_ADMIN_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The help's sections: heading line -> the option names listed under it.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            out.push((line.to_owned(), Vec::new()));
        } else if let Some((_, opts)) = out.last_mut() {
            let t = line.trim_start();
            if t.starts_with('-') {
                let long = t.split([' ', ',', '=']).find(|w| w.starts_with("--"));
                if let Some(l) = long {
                    opts.push(l.to_owned());
                }
            }
        }
    }
    out
}

#[test]
fn client_options_are_only_on_daemon_commands_under_their_heading() {
    for cmd in [&["keys"][..], &["rotate"], &["revoke"]] {
        let text = help(cmd);
        let s = sections(&text);
        let client = s
            .iter()
            .find(|(h, _)| h == HEADING)
            .unwrap_or_else(|| panic!("{cmd:?}: no {HEADING:?} in\n{text}"));
        assert_eq!(client.1, CLIENT, "{cmd:?}:\n{text}");
        let own = s
            .iter()
            .find(|(h, _)| h == "Options:")
            .unwrap_or_else(|| panic!("{cmd:?}: no Options in\n{text}"));
        for o in CLIENT {
            assert!(
                !own.1.iter().any(|x| x == o),
                "{cmd:?}: {o} among the own options:\n{text}"
            );
        }
        assert!(own.1.iter().any(|x| x == "--config"), "{cmd:?}:\n{text}");
        assert!(text.contains("JWKSD_OPERATOR_TOKEN"), "{cmd:?}:\n{text}");
    }
    let rotate = help(&["rotate"]);
    let own = sections(&rotate)
        .into_iter()
        .find(|(h, _)| h == "Options:")
        .unwrap();
    assert!(
        own.1.contains(&"--alg".to_owned()) && own.1.contains(&"--force".to_owned()),
        "{rotate}"
    );

    for cmd in [
        &["serve"][..],
        &["check-config"],
        &["rekey"],
        &["store", "copy"],
        &[],
    ] {
        let text = help(cmd);
        assert!(!text.contains(HEADING), "{cmd:?}:\n{text}");
        for o in CLIENT {
            assert!(!text.contains(o), "{cmd:?}: {o} shown:\n{text}");
        }
    }
}

#[test]
fn keys_help_documents_the_order() {
    let text = help(&["keys"]);
    assert!(
        text.contains("by algorithm")
            && text.contains("next, active, retiring, then retired and revoked")
            && text.contains("creation time"),
        "{text}"
    );
}

/// Scripts written for earlier versions give the options before the
/// command: still accepted.
#[test]
fn client_options_before_the_command_still_parse() {
    let out = Command::new(BIN)
        .args(["--admin-url", "http://127.0.0.1:1", "keys", "--help"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
