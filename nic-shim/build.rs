//! Compiles the XDP program (`bpf/nexus_xdp.c`) with clang into `$OUT_DIR/nexus_xdp.o`, which
//! the crate embeds. Needs clang (with the BPF target) and the kernel and libbpf headers.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/nexus_xdp.c";
const PACKAGES: &str = "clang, libbpf-dev, linux-libc-dev (and, for linking, libelf-dev and zlib1g-dev); on Debian or Ubuntu: apt-get install clang libbpf-dev libelf-dev zlib1g-dev";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("nexus_xdp.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());

    for header in ["/usr/include/bpf/bpf_helpers.h", "/usr/include/linux/bpf.h"] {
        if !std::path::Path::new(header).exists() {
            fail(&format!("{header} is missing"));
        }
    }
    // The asm/ headers the kernel headers include live under the multiarch directory.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_owned());
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => fail(&format!("no multiarch include directory known for {other}")),
    };
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", SOURCE, "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("{clang} failed ({status}) compiling {SOURCE}")),
        Err(error) => fail(&format!("cannot run {clang}: {error}")),
    }
}

fn fail(why: &str) -> ! {
    panic!("nexus-nic cannot build its XDP program: {why}. It needs {PACKAGES}.");
}
