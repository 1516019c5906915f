//! The official Databricks clients beside the SDKs: the `databricks` CLI and Terraform with the Databricks provider,
//! built from Go modules once per version (`hack/build-go-clients.sh`, versions pinned in `hack/clients.env`), and
//! how to run them against an emulator: hermetically (a cleared environment, a HOME of their own), signed in with
//! OAuth M2M from the standard `DATABRICKS_*` variables, as a user's CI would.
#![allow(dead_code)] // the tests and the bench use different parts

use std::{
    path::{Path, PathBuf},
    process::Output,
};

/// What `hack/build-go-clients.sh CLIENT` prints last (`sdk`: a directory, `cli`: the binary, `terraform` and
/// `provider`: the directories holding them), building it first if the cache lacks it.
pub fn built(client: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/build-go-clients.sh");
    let output = std::process::Command::new("bash").arg(&script).arg(client).output().expect("running bash");
    assert!(
        output.status.success(),
        "building the official Databricks client `{client}` ({}) failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
}

/// Signs in to an emulator's account as one principal: the variables every official client reads.
#[derive(Clone)]
pub struct Account {
    pub host: String,
    pub account_id: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Account {
    pub fn as_principal(&self, client_id: &str, client_secret: &str) -> Account {
        Account { client_id: client_id.to_owned(), client_secret: client_secret.to_owned(), ..self.clone() }
    }

    /// A command with only PATH, HOME and the `DATABRICKS_*` sign-in variables set.
    fn command(&self, program: &Path, home: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("DATABRICKS_HOST", &self.host)
            .env("DATABRICKS_ACCOUNT_ID", &self.account_id)
            .env("DATABRICKS_CLIENT_ID", &self.client_id)
            .env("DATABRICKS_CLIENT_SECRET", &self.client_secret)
            .env("DATABRICKS_AUTH_TYPE", "oauth-m2m")
            .kill_on_drop(true);
        command
    }
}

/// The `databricks` CLI with a HOME of its own (it caches the host's metadata under `~/.cache/databricks`).
pub struct Cli {
    bin: PathBuf,
    pub home: tempfile::TempDir,
}

impl Cli {
    pub fn new() -> Cli {
        Cli { bin: built("cli"), home: tempfile::tempdir().expect("temp dir") }
    }

    /// `databricks account ARGS -o json` as `account`, which must succeed: its parsed output.
    pub async fn ok(&self, account: &Account, args: &[&str]) -> serde_json::Value {
        self.account(account, args)
            .await
            .unwrap_or_else(|err| panic!("databricks account {}: {err}", args.join(" ")))
    }

    /// What the CLI cached about the host (`~/.cache/databricks/<version>/host-metadata/*.json`), if anything.
    pub fn cached_host_metadata(&self) -> Option<String> {
        let versions = std::fs::read_dir(self.home.path().join(".cache/databricks")).ok()?;
        let dirs = versions.flatten().filter_map(|v| std::fs::read_dir(v.path().join("host-metadata")).ok());
        let file = dirs.flat_map(|d| d.flatten()).next()?;
        std::fs::read_to_string(file.path()).ok()
    }

    /// `databricks account ARGS -o json` as `account`: the parsed output (`Null` when it printed nothing), or the
    /// error it printed. Only stderr goes into an error: stdout may hold a secret the command created.
    pub async fn account(&self, account: &Account, args: &[&str]) -> Result<serde_json::Value, String> {
        let output = account
            .command(&self.bin, self.home.path())
            .arg("account")
            .args(args)
            .args(["-o", "json"])
            .output()
            .await
            .expect("running the databricks CLI");
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        if stdout.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&stdout)
            .map_err(|err| format!("the output is not JSON ({err}; {} bytes)", stdout.len()))
    }
}

/// Terraform with the Databricks provider installed through a `dev_overrides` CLI configuration (no registry, no
/// `terraform init`), in a working directory of its own.
pub struct Terraform {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    account: Account,
}

impl Terraform {
    pub fn new(account: Account) -> Terraform {
        let (terraform, provider) = (built("terraform"), built("provider"));
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "provider_installation {{\n  dev_overrides {{\n    \"databricks/databricks\" = \"{}\"\n  }}\n  direct {{}}\n}}\n",
            provider.display()
        );
        std::fs::write(dir.path().join(".terraformrc"), config).expect("writing the CLI configuration");
        Terraform { bin: terraform.join("terraform"), dir, account }
    }

    /// Writes the configuration (`main.tf`).
    pub fn configure(&self, main_tf: &str) {
        std::fs::write(self.dir.path().join("main.tf"), main_tf).expect("writing main.tf");
    }

    /// `terraform ARGS` in the working directory, with no input and no update check.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.account
            .command(&self.bin, self.dir.path())
            .current_dir(self.dir.path())
            .env("TF_CLI_CONFIG_FILE", self.dir.path().join(".terraformrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .args(args)
            .output()
            .await
            .expect("running terraform")
    }
}

/// Both streams of a finished program, for failure messages.
pub fn printed(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}
