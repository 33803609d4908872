//! Times the CPU executor on one model: `time_model MODEL.onnx INPUT.pb [RUNS] [THREADS]`
//! prints the median run time in milliseconds.

use cc_backends::cpu::CpuExecutor;
use cc_ir::Executor;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(input)) = (args.get(1), args.get(2)) else {
        return Err("usage: time_model MODEL.onnx INPUT.pb [RUNS] [THREADS]".into());
    };
    let runs: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let threads: usize = args.get(4).map_or(Ok(2), |s| s.parse())?;
    let mut g = cc_ir::onnx::load_model(std::path::Path::new(model))?;
    cc_ir::infer::infer_shapes(&mut g)?;
    let (_, x) = cc_ir::onnx::read_tensor_file(std::path::Path::new(input))?;
    let ex = CpuExecutor::new(threads)?;
    ex.run(&g, std::slice::from_ref(&x))?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        ex.run(&g, std::slice::from_ref(&x))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!("{model}: median {:.2} ms over {runs} runs", times[runs / 2]);
    Ok(())
}
