//! Stand-in for `whittle quantize --mode fp16|int4` until the lead wires these modes
//! into the CLI: the same contract for these two modes, so bench/quantize_vs_ort.py can
//! run them now.
//!
//! usage: lowbit MODEL -o OUT --mode fp16|int4 [--block-size N] [--symmetric] [--json]

use std::process::ExitCode;

use whittle_ir::{ExternalData, Model};
use whittle_passes::{fp16, int4};

struct Args {
    model: String,
    out: String,
    mode: String,
    block_size: usize,
    symmetric: bool,
    json: bool,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        model: String::new(),
        out: String::new(),
        mode: String::new(),
        block_size: 32,
        symmetric: false,
        json: false,
    };
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "-o" => args.out = value()?,
            "--mode" => args.mode = value()?,
            "--block-size" => {
                args.block_size = value()?.parse().map_err(|e| format!("--block-size: {e}"))?
            }
            "--symmetric" => args.symmetric = true,
            "--json" => args.json = true,
            _ if args.model.is_empty() && !a.starts_with('-') => args.model = a,
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if args.model.is_empty() || args.out.is_empty() {
        return Err("usage: lowbit MODEL -o OUT --mode fp16|int4".into());
    }
    Ok(args)
}

fn run() -> Result<(), String> {
    let args = parse()?;
    if std::path::Path::new(&args.out).exists() {
        return Err(format!("{} exists", args.out));
    }
    let model = Model::load(&args.model).map_err(|e| e.to_string())?;
    let (out, report) = match args.mode.as_str() {
        "fp16" => {
            let (m, r) =
                fp16::convert(&model, &fp16::Fp16Options::default()).map_err(|e| e.to_string())?;
            (
                m,
                serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?,
            )
        }
        "int4" => {
            let opts = int4::Int4Options {
                block_size: args.block_size,
                symmetric: args.symmetric,
                ..Default::default()
            };
            let (m, r) = int4::quantize(&model, &opts).map_err(|e| e.to_string())?;
            (
                m,
                serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?,
            )
        }
        other => {
            return Err(format!(
                "--mode {other}: this stand-in runs fp16 and int4 only"
            ))
        }
    };
    out.save(&args.out, &ExternalData::Auto)
        .map_err(|e| e.to_string())?;
    if args.json {
        println!("{report}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
