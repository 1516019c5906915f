//! `make run`: the sandbox comes up with every example Ready, shows masked Secrets, and cleans up on Ctrl-C.

use std::{process::Stdio, time::Duration};

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_brings_every_example_to_ready_and_stops_on_ctrl_c() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the sandbox");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut printed = String::new();
    let mut progress = String::new();
    let waited = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            tokio::select! {
                line = stdout.next_line() => match line.expect("read") {
                    Some(line) => {
                        printed.push_str(&line);
                        printed.push('\n');
                        if line.contains("Press Ctrl-C") {
                            return;
                        }
                    }
                    None => return,
                },
                line = stderr.next_line() => if let Some(line) = line.expect("read") {
                    progress.push_str(&line);
                    progress.push('\n');
                },
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "the sandbox did not come up in time:\n{progress}\n{printed}");
    for example in [
        "ServicePrincipal/etl-nightly",
        "ServicePrincipal/reporting",
        "DatabricksAppConnection/dashboards",
        "DatabricksAppConnection/desktop-sql",
        "TrustPolicy/reporting-k8s",
        "TrustPolicy/reporting-github",
        "DatabricksAccount/default",
        "DatabricksAccount/federated",
    ] {
        let line = progress
            .lines()
            .find(|l| l.contains(example))
            .unwrap_or_else(|| panic!("{example} not reported:\n{progress}"));
        assert!(line.contains("Ready=True"), "{line}");
    }
    assert!(printed.contains("export KUBECONFIG="), "{printed}");
    assert!(printed.contains("DATABRICKS_CLIENT_SECRET=") && printed.contains("masked"), "{printed}");
    assert!(printed.contains("DATABRICKS_AUTH_TYPE=file-oidc"), "{printed}");

    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let status =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("stops").expect("wait");
    assert!(status.success(), "{status}");
}
