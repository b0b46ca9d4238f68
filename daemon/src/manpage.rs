//! Man pages and shell completions, generated from the clap definition so
//! they cannot drift from `--help`. `packaging/build-deb` asks the built
//! binary for them (`hark manpage DIR`, `hark completions SHELL`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use clap_complete::Shell;

/// `hark manpage DIR`.
#[derive(Args, Debug, Clone)]
pub struct ManpageArgs {
    /// Directory to write hark.1 and one page per subcommand into
    /// (hark-models.1, hark-models-fetch.1, ...); created if missing.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `hark completions SHELL`.
#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// `hark manpage DIR`: writes the pages and lists them on stdout.
pub fn run_manpage(args: ManpageArgs, cmd: clap::Command) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let pages = write_man_page(cmd, &args.dir)
        .with_context(|| format!("cannot write man pages into {}", args.dir.display()))?;
    for page in pages {
        println!("{}", page.display());
    }
    Ok(())
}

/// `hark completions SHELL`: the script on stdout.
pub fn run_completions(args: CompletionsArgs, cmd: clap::Command) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    write_completions(cmd, args.shell, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Writes `NAME.1` for `cmd` and `NAME-SUB.1` for every visible subcommand,
/// recursively, into `out_dir` (which must exist); returns the files
/// written, main page first.
pub fn write_man_page(cmd: clap::Command, out_dir: &Path) -> io::Result<Vec<PathBuf>> {
    // `help` would get a page of its own; building sets the subcommands'
    // display names (`hark-models`), which become their page names.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, out_dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: clap::Command, out_dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    written.push(clap_mangen::Man::new(cmd).generate_to(out_dir)?);
    for sub in subcommands {
        write_pages(sub, out_dir, written)?;
    }
    Ok(())
}

/// Writes the completion script for `shell` to `out`; the command is
/// completed under its own name (`hark`).
pub fn write_completions(
    mut cmd: clap::Command,
    shell: Shell,
    out: &mut dyn Write,
) -> io::Result<()> {
    let name = cmd.get_bin_name().unwrap_or(cmd.get_name()).to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn example() -> Command {
        Command::new("hark")
            .version("1.2.3")
            .about("Hark: a local voice assistant")
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .short('v')
                    .help("More log output")
                    .action(clap::ArgAction::Count),
            )
            .subcommand(
                Command::new("models")
                    .about("Install and list models")
                    .subcommand(Command::new("fetch").about("Download models")),
            )
            .subcommand(Command::new("secret").hide(true))
            .subcommand(
                Command::new("say")
                    .about("Speak text")
                    .arg(Arg::new("text").required(true)),
            )
    }

    #[test]
    fn one_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_page(example(), dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "hark.1",
                "hark-models.1",
                "hark-models-fetch.1",
                "hark-say.1"
            ]
        );
        let main = std::fs::read_to_string(dir.path().join("hark.1")).unwrap();
        assert!(main.starts_with(".ie"), "roff: {main}");
        assert!(main.contains(".TH hark 1"), "{main}");
        assert!(main.contains("local voice assistant"), "{main}");
        assert!(main.contains("verbose"), "{main}");
        assert!(main.contains("1.2.3"), "{main}");
        assert!(!main.contains("secret"), "hidden commands stay hidden");
        let say = std::fs::read_to_string(dir.path().join("hark-say.1")).unwrap();
        assert!(say.contains("Speak text"), "{say}");
    }

    #[test]
    fn completions_name_the_binary_and_its_subcommands() {
        for (shell, marker) in [
            (Shell::Bash, "complete -F _hark"),
            (Shell::Zsh, "#compdef hark"),
            (Shell::Fish, "complete -c hark"),
        ] {
            let mut out = Vec::new();
            write_completions(example(), shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            assert!(script.contains(marker), "{shell}: {script}");
            assert!(script.contains("models"), "{shell}: {script}");
            assert!(script.contains("fetch"), "{shell}: {script}");
        }
    }

    #[test]
    fn the_run_functions_write_what_they_promise() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        run_manpage(
            ManpageArgs {
                dir: nested.clone(),
            },
            example(),
        )
        .unwrap();
        assert!(nested.join("hark.1").is_file());
    }
}
