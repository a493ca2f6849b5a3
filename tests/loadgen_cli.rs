//! loadgen as a user meets it: the URL as an argument.

mod support;

use std::process::Command;

use support::{
    loadgen::{closed_port, loadgen},
    TestServer,
};

fn url(server: &TestServer) -> String {
    format!("ws://{}/", server.addr)
}

#[test]
fn the_url_argument_wins_over_loadgen_url_and_clashes_with_the_flag() {
    let server = TestServer::default();
    let nowhere = format!("ws://127.0.0.1:{}/", closed_port());
    // LOADGEN_URL points nowhere; the argument (the server) is used.
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([url(&server).as_str(), "-c", "2", "-d", "300ms", "--warmup", "0", "--quiet"])
        .env("LOADGEN_URL", &nowhere)
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(&url(&server)) && stdout.contains("result: ok"), "{stdout}");
    // The same URL twice, as an argument and with --url: a usage error.
    let target = url(&server);
    let run = loadgen(&[&target, "--url", &target, "-d", "300ms"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("twice"), "{}", run.stderr);
}
