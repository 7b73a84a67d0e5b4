//! Finding the `quotad` binary: built once per test process with the cargo that runs the
//! tests, into the same target directory and profile as the test binary itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// Set this to a `quotad` path to skip the build (for example an installed release build).
pub const QUOTAD_BIN_ENV: &str = "QUOTAD_BIN";

/// The path of `quotad`, built on first use. Later calls in the same process return the
/// same answer (an error too: a broken build does not get retried by every test).
pub fn quotad_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_or_build() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(QUOTAD_BIN_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{QUOTAD_BIN_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let layout = TargetLayout::of_current_exe()?;
    let workspace = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["-p", "quota-server", "--bin", "quotad"])
        .env("CARGO_TARGET_DIR", &layout.target_dir);
    match layout.profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(triple) = &layout.triple {
        cmd.args(["--target", triple]);
    }
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "building quotad failed ({}): {cmd:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bin = layout
        .profile_dir
        .join(format!("quotad{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!("cargo built quotad but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// The repository root: this package lives in `<root>/tests`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where cargo put the running test binary: `<target>[/<triple>]/<profile>/deps/<exe>`.
struct TargetLayout {
    target_dir: PathBuf,
    triple: Option<String>,
    profile: String,
    profile_dir: PathBuf,
}

impl TargetLayout {
    fn of_current_exe() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("current_exe")?;
        let mut dir = exe.parent().context("test binary has no directory")?;
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir = dir.parent().context("deps/ has no parent")?;
        }
        let profile_dir = dir.to_path_buf();
        let profile = dir_name(&profile_dir)?;
        // cargo's profile "dev" builds into "debug"; any other profile into its own name.
        let above = profile_dir.parent().context("profile dir has no parent")?;
        // With `--target <triple>` there is one more level; the real target dir is marked
        // by CACHEDIR.TAG, which cargo writes at its top.
        let (target_dir, triple) = if !above.join("CACHEDIR.TAG").exists()
            && above
                .parent()
                .is_some_and(|p| p.join("CACHEDIR.TAG").exists())
        {
            (
                above.parent().unwrap_or(above).to_path_buf(),
                Some(dir_name(above)?),
            )
        } else {
            (above.to_path_buf(), None)
        };
        Ok(Self {
            target_dir,
            triple,
            profile,
            profile_dir,
        })
    }
}

fn dir_name(p: &Path) -> anyhow::Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no UTF-8 name", p.display()))
}
