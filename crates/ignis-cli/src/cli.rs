use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Docker-style microVMs on Firecracker and QEMU.
#[derive(Debug, Parser)]
#[command(name = "ignis", version, disable_version_flag = true)]
pub struct Cli {
    /// State directory.
    #[arg(long, global = true, env = "IGNIS_ROOT", default_value = ignis_core::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log filter (error, warn, info, debug, trace or a tracing filter); IGNIS_LOG overrides.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    /// No progress bars.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Reach this registry (HOST:PORT) over plain HTTP. Repeatable.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage kernels.
    #[command(subcommand)]
    Kernel(KernelCmd),
    /// System-wide operations.
    #[command(subcommand)]
    System(SystemCmd),
    /// Print the version.
    Version,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum InspectFormat {
    #[default]
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ListOpts {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: ListFormat,
    /// Go-template-like row format, e.g. '{{.ID}} {{.Name}}'.
    #[arg(long, conflicts_with = "output")]
    pub format: Option<String>,
    /// Print IDs only.
    #[arg(long = "quiet-ids", short = 'Q', hide = true)]
    pub ids_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Pull an image from a registry.
    Pull {
        /// Reference, e.g. busybox, ghcr.io/acme/app:1.2, 127.0.0.1:5000/x@sha256:...
        reference: String,
    },
    /// Import a docker-save tarball or an OCI image layout (directory or tar).
    Import {
        path: PathBuf,
        /// Also name the imported image(s) this.
        #[arg(long, short = 't')]
        name: Option<String>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Show an image's record.
    Inspect {
        image: String,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: InspectFormat,
    },
    /// Remove images.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove even if named several times or used by a VM (then it is
        /// untagged now and deleted once unused).
        #[arg(long, short = 'f')]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KernelCmd {
    /// Import a kernel: a vmlinux/bzImage file, a linux-image .deb,
    /// apt:PACKAGE (e.g. apt:linux-image-amd64), or an OCI kernel image.
    Import {
        source: String,
        /// Name it (default: the release, or the image reference).
        #[arg(long)]
        name: Option<String>,
        /// Make it the kernel VMs use when none is given.
        #[arg(long)]
        default: bool,
    },
    /// List kernels.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Show a kernel's record.
    Inspect {
        kernel: String,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: InspectFormat,
    },
    /// Remove kernels.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        kernels: Vec<String>,
        #[arg(long, short = 'f')]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Remove dangling images and every unreferenced blob, disk and temp file.
    Prune {
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: ListFormat,
    },
}
