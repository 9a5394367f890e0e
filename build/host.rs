//! The host build: each `cuda/*.cu` compiled for the CPU after `cuda/host/shim.h`, its kernels
//! registered for the host executor (`src/emu`).

use super::*;

/// One translation unit of the host build: a kernel file, built plainly or as a variant.
struct Unit<'a> {
    src: &'a Source,
    variant: &'a str,
    define: Option<&'a str>,
}

impl Unit<'_> {
    fn tag(&self) -> String {
        let variant = if self.variant.is_empty() {
            "base"
        } else {
            self.variant
        };
        format!("{}__{variant}", self.src.module)
    }
}

/// Builds the host executor and every kernel file for it into the static library the crate
/// links; returns their objects (the simulated platform links them too).
pub fn build(sources: &[Source], cuda: &Path, out: &Path) -> Result<Vec<PathBuf>, String> {
    let host_dir = cuda.join("host");
    let mut units = Vec::new();
    for src in sources {
        units.push(Unit {
            src,
            variant: "",
            define: None,
        });
        for (module, variant, define) in HOST_VARIANTS {
            if *module == src.module {
                units.push(Unit {
                    src,
                    variant,
                    define: Some(define),
                });
            }
        }
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(&host_dir)
        .include(cuda)
        // Kernels reinterpret float* as float4* and the like, as CUDA code does.
        .flag("-fno-strict-aliasing")
        // No errno from math functions on the GPU either; lets g++ vectorise expf & co.
        .flag("-fno-math-errno")
        // Sums stay as written (no contraction of a*b+c), as the kernels' references expect.
        .flag("-ffp-contract=off")
        .flag("-Wno-unknown-pragmas")
        .warnings(false);
    // fmaf (the tensor-core emulation's inner loop) as one instruction instead of a call
    // into libm, where the machine building (and running) the tests has it.
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        build.flag("-mfma");
    }
    // The kernels run thousands of fibers; unoptimised they are far too slow even for tests.
    if matches!(env::var("OPT_LEVEL").as_deref(), Ok("0" | "1" | "s" | "z")) {
        build.opt_level(2);
    }
    let compiler = build.get_compiler();

    let generated = parallel_map(&units, |unit| {
        let kernels = scan_kernels(&compiler, unit, &host_dir, out)?;
        let path = out.join(format!("emu_{}.cpp", unit.tag()));
        write_file(&path, &unit_source(unit, &kernels))?;
        Ok(path)
    })?;
    let registry = out.join("emu_registry.cpp");
    write_file(&registry, &registry_source(&units))?;

    build
        .files(&generated)
        .file(&registry)
        .file(host_dir.join("executor.cpp"));
    let objects = build
        .try_compile_intermediates()
        .map_err(|e| format!("host build of the kernels failed: {e}"))?;
    archive(&build, out, "alexnet_emu", &objects)?;
    Ok(objects)
}

/// `lib<name>.a` in `out` from `objects`, linked into the crate (with the C++ library).
fn archive(build: &cc::Build, out: &Path, name: &str, objects: &[PathBuf]) -> Result<(), String> {
    let lib = out.join(format!("lib{name}.a"));
    let _ = fs::remove_file(&lib);
    let status = build
        .get_archiver()
        .arg("crs")
        .arg(&lib)
        .args(objects)
        .status()
        .map_err(|e| format!("running the archiver: {e}"))?;
    if !status.success() {
        return Err(format!("the archiver failed making {}", lib.display()));
    }
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static={name}");
    println!("cargo:rustc-link-lib=stdc++");
    Ok(())
}

/// The `extern "C"` kernels the unit defines, found in its preprocessed text (so `#if`
/// blocks count as the host compile will see them).
fn scan_kernels(
    compiler: &cc::Tool,
    unit: &Unit,
    host_dir: &Path,
    out: &Path,
) -> Result<Vec<String>, String> {
    let scan = out.join(format!("scan_{}.cpp", unit.tag()));
    write_file(
        &scan,
        &format!(
            "#include \"shim.h\"\n#include {:?}\n",
            unit.src.path.display().to_string()
        ),
    )?;
    let mut cmd = compiler.to_command();
    cmd.arg("-E")
        .arg("-DALEXNET_EMU_SCAN")
        .arg("-I")
        .arg(host_dir);
    if let Some(define) = unit.define {
        cmd.arg(format!("-D{define}"));
    }
    cmd.arg(&scan);
    let output = cmd
        .output()
        .map_err(|e| format!("running the host C++ compiler: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "preprocessing {} for the host executor failed:\n{}",
            unit.src.path.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(find_kernels(&String::from_utf8_lossy(&output.stdout)))
}

fn unit_source(unit: &Unit, kernels: &[String]) -> String {
    let tag = unit.tag();
    let mut s = format!(
        "// Generated by build.rs: the host executor's build of cuda/{}.cu{}.\n",
        unit.src.module,
        if unit.variant.is_empty() {
            String::new()
        } else {
            format!(" (variant {})", unit.variant)
        }
    );
    if let Some(define) = unit.define {
        let _ = writeln!(s, "#define {define} 1");
    }
    s.push_str("#include \"shim.h\"\n#include \"registry.h\"\n");
    s.push_str(
        "// Each build of a file gets its own symbols: kernels renamed, the rest internal.\n",
    );
    for k in kernels {
        let _ = writeln!(s, "#define {k} alexnet_emu_{tag}__{k}");
    }
    let _ = writeln!(
        s,
        "namespace {{\n#include {:?}\n}}  // namespace",
        unit.src.path.display().to_string()
    );
    if kernels.is_empty() {
        let _ = writeln!(
            s,
            "extern \"C\" const alexnet_emu::KernelTable alexnet_emu_table__{tag} = {{nullptr, 0}};"
        );
    } else {
        s.push_str("static const alexnet_emu::KernelEntry alexnet_emu_entries[] = {\n");
        for k in kernels {
            let _ = writeln!(
                s,
                "    alexnet_emu::kernel_entry<&{k}>({:?}, {:?}, {k:?}),",
                unit.variant, unit.src.module
            );
        }
        s.push_str("};\n");
        let _ = writeln!(
            s,
            "extern \"C\" const alexnet_emu::KernelTable alexnet_emu_table__{tag} = {{alexnet_emu_entries, {}}};",
            kernels.len()
        );
    }
    s
}

fn registry_source(units: &[Unit]) -> String {
    let mut s = String::from(
        "// Generated by build.rs: every host-built kernel file's table.\n#include \"registry.h\"\n",
    );
    for u in units {
        let _ = writeln!(
            s,
            "extern \"C\" const alexnet_emu::KernelTable alexnet_emu_table__{};",
            u.tag()
        );
    }
    s.push_str("static const alexnet_emu::KernelTable* const tables[] = {\n");
    for u in units {
        let _ = writeln!(s, "    &alexnet_emu_table__{},", u.tag());
    }
    s.push_str("    nullptr,\n};\n");
    let _ = writeln!(
        s,
        "extern \"C\" const alexnet_emu::KernelTable* const* alexnet_emu_tables(size_t* count) {{\n    *count = {};\n    return tables;\n}}",
        units.len()
    );
    s
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
}

/// A rough C++ lexer, enough for preprocessed text: identifiers, string literals, punctuation.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' && line_start {
            // A line marker or a #pragma: skip the line.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        line_start = false;
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            // Numbers, with C++14 digit separators and exponent signs.
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || chars[i] == '\''
                    || ((chars[i] == '+' || chars[i] == '-')
                        && matches!(chars[i - 1], 'e' | 'E' | 'p' | 'P')))
            {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if c == '"' {
                out.push(Token::Str(
                    chars[start..i.min(chars.len())].iter().collect(),
                ));
            }
            i += 1;
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// Names of the functions marked `__global__` with C linkage (`extern "C"` before the
/// marker, or inside an `extern "C" { ... }` block), in order, without repeats.
pub(super) fn find_kernels(text: &str) -> Vec<String> {
    let toks = tokens(text);
    let is_ident = |i: usize, s: &str| matches!(toks.get(i), Some(Token::Ident(x)) if x == s);
    let is_punct = |i: usize, c: char| matches!(toks.get(i), Some(Token::Punct(x)) if *x == c);
    let is_extern_c = |i: usize| {
        is_ident(i, "extern") && matches!(toks.get(i + 1), Some(Token::Str(s)) if s == "C")
    };
    let mut braces: Vec<bool> = Vec::new(); // per open brace: an extern "C" block?
    let mut names: Vec<String> = Vec::new();
    for i in 0..toks.len() {
        if is_punct(i, '{') {
            braces.push(i >= 2 && is_extern_c(i - 2));
        } else if is_punct(i, '}') {
            braces.pop();
        } else if is_ident(i, GLOBAL_MARK) {
            let c_linkage = braces.iter().any(|&b| b) || (i >= 2 && is_extern_c(i - 2));
            if !c_linkage {
                continue; // a template or C++-mangled kernel: not launchable by name
            }
            let mut j = i + 1;
            while j < toks.len() && !is_punct(j, ';') && !is_punct(j, '{') {
                if is_ident(j, "__attribute__") {
                    // Skip its parenthesised group.
                    let mut depth = 0;
                    j += 1;
                    while j < toks.len() {
                        if is_punct(j, '(') {
                            depth += 1;
                        } else if is_punct(j, ')') {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        j += 1;
                    }
                } else if let (Some(Token::Ident(name)), true) = (toks.get(j), is_punct(j + 1, '('))
                {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                    break;
                }
                j += 1;
            }
        }
    }
    names
}
