//! `whittle_search::nas`: search spaces and candidate hashes, measurements against a
//! re-measurement, infeasible candidates never trained, the same seed giving the same
//! result, and a resumed search reusing its journals. The data is a small Fashion-MNIST
//! subset written as .npy pairs.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use whittle_data::Split;
use whittle_ir::{Model, TensorData};
use whittle_pipeline::journal::Journal;
use whittle_pipeline::SilentObserver;
use whittle_search::nas::candidate::Candidate;
use whittle_search::nas::measure::{measure, MIN_RUNS};
use whittle_search::nas::recheck::{first_passing, recheck, Reference, Stage, RUNS};
use whittle_search::nas::runner::{Job, Local, Runner};
use whittle_search::nas::space::{Family, Space};
use whittle_search::nas::trials::{JobSettings, Measured, Outcome, Trained};
use whittle_search::nas::{search, Limits, NasResult, Settings, Status, Strategy, WarmStart};
use whittle_testkit::scratch;

/// `npy:X,Y` specs of the first `n` samples of Fashion-MNIST's `split`, written in `dir`.
fn fashion_subset(dir: &Path, split: Split, n: usize) -> String {
    let spec = format!(
        "fashion-mnist:{}",
        whittle_data::assets_dir().join("fashion-mnist").display()
    );
    let data = whittle_data::load(&spec, split, Some(n)).unwrap();
    let (x, y) = (
        dir.join(format!("{split:?}-x.npy")),
        dir.join(format!("{split:?}-y.npy")),
    );
    whittle_data::npy::write_npy(&x, &data.images).unwrap();
    let labels = TensorData::from_slice(vec![data.labels.len()], &data.labels).unwrap();
    whittle_data::npy::write_npy(&y, &labels).unwrap();
    format!("npy:{},{}", x.display(), y.display())
}

fn settings(dir: &Path, limits: Limits, seed: u64) -> Settings {
    Settings {
        space: Family::Cnn,
        data: fashion_subset(dir, Split::Train, 600),
        eval_data: Some(fashion_subset(dir, Split::Test, 200)),
        limits,
        iterations: 4,
        budget: None,
        threads: 1,
        seed,
        work_dir: dir.join("work"),
        output: dir.join("out.onnx"),
        strategy: Strategy::Evolution,
        warm_start: None,
        from: None,
    }
}

fn run(s: &Settings) -> NasResult {
    let runner = Local {
        observer: &SilentObserver,
        work_dir: s.work_dir.clone(),
    };
    search(s, &SilentObserver, &runner).unwrap()
}

#[test]
fn samples_stay_in_bounds_and_ids_are_stable() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for family in [
        Family::Cnn,
        Family::Resnet,
        Family::MobilenetV3,
        Family::Vit,
    ] {
        let space = Space::new(family, [1, 28, 28], 10, 0).unwrap();
        for _ in 0..50 {
            let genome = space.sample(&mut rng);
            assert!(space.contains(&genome), "{family}: {genome:?}");
            let c = Candidate::new(&space, &genome);
            assert!(space.contains(&c.genome));
            assert_eq!(Candidate::new(&space, &c.genome).id, c.id, "{}", c.spec);
            whittle_zoo::build(&c.spec).unwrap_or_else(|e| panic!("{}: {e}", c.spec));
        }
    }
    let cnn = Space::new(Family::Cnn, [1, 28, 28], 10, 0).unwrap();
    let names: Vec<&str> = cnn.genes.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "blocks",
            "convs",
            "channels1",
            "channels2",
            "channels3",
            "channels4"
        ]
    );
    // Two blocks: the channels of blocks 3 and 4 do not change the candidate.
    let a = Candidate::new(&cnn, &[2, 1, 16, 32, 8, 8]);
    let b = Candidate::new(&cnn, &[2, 1, 16, 32, 128, 64]);
    assert_eq!(a, b);
    assert_eq!(
        a.spec,
        "zoo:cnn:channels=16-32,convs=1,input=1x28x28,classes=10,seed=0"
    );
    assert_eq!(
        a.id, "f9746d183030d8f4",
        "the id is the SHA-256 of the spec"
    );
    let mobile = Space::new(Family::MobilenetV3, [1, 28, 28], 10, 0).unwrap();
    let widths = &mobile.genes.last().unwrap().values;
    assert_eq!(widths, &[25, 50, 75, 100]);
    let vit = Space::new(Family::Vit, [1, 28, 28], 10, 0).unwrap();
    assert_eq!(
        vit.genes[0].values,
        [4, 7, 14],
        "patches dividing 28 into 2-8 a side"
    );
    // A 4x4 image allows 3 cnn blocks at most (two 2x2 poolings).
    let small = Space::new(Family::Cnn, [1, 4, 4], 10, 0).unwrap();
    assert_eq!(small.genes[0].values, [1, 2, 3]);
}

#[test]
fn measurements_equal_a_remeasurement() {
    let dir = scratch("measure");
    let model = whittle_zoo::build("cnn:channels=8-16").unwrap();
    let path = dir.join("m.onnx");
    model.save(&path, &Default::default()).unwrap();
    let m = measure(&model, &path, 1).unwrap();
    let again = Model::load(&path).unwrap();
    assert_eq!(m.size_bytes, std::fs::metadata(&path).unwrap().len());
    let macs = whittle_ir::cost::model_macs(&again, &Default::default()).unwrap();
    assert_eq!(m.macs, macs);
    // Hand count: conv1 8x1x9 over 28x28, conv2 16x8x9 over 14x14, the head 16x10.
    assert_eq!(m.macs, 8 * 9 * 28 * 28 + 16 * 8 * 9 * 14 * 14 + 16 * 10);
    assert_eq!(
        m.parameters,
        whittle_ir::cost::parameter_count(again.graph())
    );
    assert!(m.int8_size_bytes < m.size_bytes, "{m:?}");
    assert_eq!(m.runs, MIN_RUNS);
    assert!(
        m.latency_ms > 0.0 && m.latency_p90_ms >= m.latency_ms,
        "{m:?}"
    );
}

/// The end of a search: a latency limit between a narrow and a wide CNN's (50 times
/// apart) keeps the narrow one, though the wide one ranks first, and says why: the wide
/// one's latency, measured again taking turns with the reference, is over it.
#[test]
fn a_limit_between_two_latencies_keeps_the_model_under_it() {
    let dir = scratch("recheck");
    let reference = Reference::zoo([1, 28, 28], 10, 1, &dir).unwrap();
    assert!(reference.latency_ms > 0.0 && reference.path.exists());
    let path = |id: &str| dir.join(format!("{id}.onnx"));
    for (id, spec) in [
        ("narrow", "cnn:channels=8"),
        ("wide", "cnn:channels=128-128-128,convs=2"),
    ] {
        let model = whittle_zoo::build(spec).unwrap();
        model.save(path(id), &Default::default()).unwrap();
    }
    let once = |id: &str, limit| recheck(id, Stage::Result, &path(id), &reference, 1, limit);
    let (narrow, wide) = (once("narrow", None).unwrap(), once("wide", None).unwrap());
    assert!(narrow.passed && wide.passed, "no limit, nothing fails");
    assert_eq!(narrow.runs, RUNS);
    assert!(narrow.latency_p90_ms >= narrow.latency_ms && narrow.reference_ms > 0.0);
    assert!(
        wide.latency_ms > 5.0 * narrow.latency_p90_ms,
        "{wide:?} {narrow:?}"
    );
    let limit = (wide.latency_ms * narrow.latency_p90_ms).sqrt();

    let mut rechecks = Vec::new();
    let check = |id: &str| Ok((once(id, Some(limit))?, ()));
    let ranked = ["wide", "narrow"].map(String::from);
    let kept = first_passing(ranked, 1, check, &SilentObserver, &mut rechecks).unwrap();
    assert_eq!(kept, [("narrow".to_string(), ())]);
    assert_eq!(rechecks.len(), 2);
    assert!(!rechecks[0].passed && rechecks[0].latency_p90_ms > limit);
    let narrow = &rechecks[1];
    assert!(narrow.passed && narrow.latency_p90_ms - narrow.load_tail_ms <= limit);
    assert!(narrow.load_tail_ms >= 0.0 && narrow.reference_p90_ms >= narrow.reference_ms);
    // Once one passed, the rest are not measured.
    let mut rechecks = Vec::new();
    let ranked = ["narrow", "wide"].map(String::from);
    let kept = first_passing(ranked, 1, check, &SilentObserver, &mut rechecks).unwrap();
    assert_eq!((kept.len(), rechecks.len()), (1, 1));
}

#[test]
fn infeasible_candidates_are_never_trained() {
    let dir = scratch("infeasible");
    // 300k MACs: few cnn candidates fit.
    let limits = Limits {
        max_macs: Some(300_000),
        ..Limits::default()
    };
    let s = settings(&dir, limits, 3);
    let result = run(&s);
    let measured: Journal<Measured> = Journal::open(&s.work_dir).unwrap();
    let trained: Journal<Trained> = Journal::open(&s.work_dir).unwrap();
    let infeasible: HashSet<&str> = measured
        .entries()
        .iter()
        .filter(|m| m.measurement.macs > 300_000)
        .map(|m| m.key.as_str())
        .collect();
    assert!(
        !infeasible.is_empty(),
        "the limit should exclude some candidates"
    );
    assert_eq!(result.infeasible, infeasible.len());
    for t in trained.entries() {
        assert!(!infeasible.contains(t.id.as_str()), "{} was trained", t.id);
    }
    if result.status == Status::Ok {
        assert!(result.macs.unwrap() <= 300_000);
    }

    // Nothing fits 10 MACs: nothing trains, no model, the nearest candidate is named.
    let dir = scratch("none-fits");
    let s = settings(
        &dir,
        Limits {
            max_macs: Some(10),
            ..Limits::default()
        },
        3,
    );
    let result = run(&s);
    assert_eq!(result.status, Status::Infeasible);
    assert_eq!(result.trained, 0);
    assert!(!s.output.exists());
    let nearest = result.nearest.expect("the nearest candidate");
    let fewest = result
        .trials
        .iter()
        .map(|t| t.measurement.macs)
        .min()
        .unwrap();
    assert_eq!(nearest.measurement.macs, fewest);
    assert!(result.reason.unwrap().contains("macs"));
}

#[test]
fn the_same_seed_gives_the_same_result_and_a_rerun_resumes() {
    let limits = Limits {
        max_size_mb: Some(0.2),
        ..Limits::default()
    };
    let (a, b) = (scratch("seed-a"), scratch("seed-b"));
    let (sa, sb) = (settings(&a, limits.clone(), 5), settings(&b, limits, 5));
    let (ra, rb) = (run(&sa), run(&sb));
    assert_eq!(ra.status, Status::Ok);
    assert!(ra.size_mb.unwrap() <= 0.2);
    assert_eq!(
        (&ra.id, ra.accuracy, ra.candidates),
        (&rb.id, rb.accuracy, rb.candidates)
    );
    let ids = |r: &NasResult| r.trials.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&ra), ids(&rb));
    let bytes = |s: &Settings| std::fs::read(&s.output).unwrap();
    assert_eq!(bytes(&sa), bytes(&sb), "the same model, byte for byte");
    // A rerun in the same work folder trains nothing again.
    let journal =
        |s: &Settings| std::fs::read_to_string(s.work_dir.join("nas-trained.jsonl")).unwrap();
    let before = journal(&sa);
    let again = run(&sa);
    assert_eq!(journal(&sa), before);
    assert_eq!((again.id, again.accuracy), (ra.id, ra.accuracy));
    // Random search proposes other candidates from the same seed.
    let c = scratch("seed-random");
    let mut sr = settings(&c, Limits::default(), 5);
    sr.strategy = Strategy::Random;
    let rr = run(&sr);
    assert_eq!(rr.trained, 4);
}

/// A machine slower than [`Local`]'s: every job waits `delay` first.
struct Slowed<'r> {
    inner: &'r dyn Runner,
    delay: Duration,
}

impl Runner for Slowed<'_> {
    fn run(
        &self,
        settings: &JobSettings,
        jobs: &[Job],
    ) -> whittle_search::nas::error::Result<Vec<Outcome>> {
        std::thread::sleep(self.delay * jobs.len() as u32);
        self.inner.run(settings, jobs)
    }
}

/// How many candidates reached each rung.
fn per_rung(r: &NasResult) -> Vec<usize> {
    (1..=3)
        .map(|n| {
            r.trials
                .iter()
                .filter(|t| t.rung_accuracy.len() >= n)
                .count()
        })
        .collect()
}

/// The clock decides nothing short of `--budget`: a run on a machine several times slower
/// trains the same candidates at every rung (their number set by the iterations: 10, then
/// a third, then two) and returns the same model byte for byte. A budget spent early stops
/// the search, keeps a model, and says so.
#[test]
fn a_slower_machine_gives_the_same_result_and_a_spent_budget_says_so() {
    let (a, b) = (scratch("slow-a"), scratch("slow-b"));
    let with = |dir: &Path| Settings {
        iterations: 10,
        budget: Some(Duration::from_secs(3600)),
        ..settings(dir, Limits::default(), 9)
    };
    let (sa, sb) = (with(&a), with(&b));
    let started = Instant::now();
    let ra = run(&sa);
    let fast = started.elapsed();
    let local = Local {
        observer: &SilentObserver,
        work_dir: sb.work_dir.clone(),
    };
    let slowed = Slowed {
        inner: &local,
        delay: Duration::from_millis(300),
    };
    let started = Instant::now();
    let rb = search(&sb, &SilentObserver, &slowed).unwrap();
    assert!(started.elapsed() > fast, "{:?} {fast:?}", started.elapsed());
    assert_eq!(ra.status, Status::Ok);
    assert_eq!(per_rung(&ra), [10, 4, 2], "rungs set by the iterations");
    assert_eq!(per_rung(&rb), per_rung(&ra));
    assert!(ra.budget_stops.is_empty() && rb.budget_stops.is_empty());
    let accuracies = |r: &NasResult| {
        (r.trials.iter())
            .map(|t| (t.id.clone(), t.rung_accuracy.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(accuracies(&ra), accuracies(&rb));
    assert_eq!((&ra.id, ra.accuracy), (&rb.id, rb.accuracy));
    let bytes = |s: &Settings| std::fs::read(&s.output).unwrap();
    assert_eq!(bytes(&sa), bytes(&sb), "the same model, byte for byte");

    // A budget spent at once: the first generation (4) trains, nothing more is proposed,
    // rung 1 trains its best only, and the JSON says both.
    let c = scratch("slow-spent");
    let mut sc = with(&c);
    sc.budget = Some(Duration::from_millis(1));
    let rc = run(&sc);
    assert_eq!(rc.status, Status::Ok);
    assert_eq!(per_rung(&rc), [4, 1, 1]);
    assert_eq!(rc.budget_stops.len(), 2, "{:?}", rc.budget_stops);
    assert!(rc.budget_stops[0].contains("4 of 10 trained at rung 0"));
    assert!(rc.budget_stops[1].contains("rung 1, where 1 of 2 candidates trains"));
}

#[test]
fn the_proxies_rank_the_warm_start_and_naswot_stays_finite() {
    let dir = scratch("proxy");
    let mut s = settings(&dir, Limits::default(), 2);
    let batch = whittle_search::nas::proxy::batch(&s.data).unwrap();
    let score = |spec: &str| {
        let model = whittle_zoo::build(spec).unwrap();
        whittle_search::nas::proxy::naswot(&model, &batch).unwrap()
    };
    let narrow = score("zoo:cnn:channels=8,input=1x28x28,classes=10,seed=0").unwrap();
    let wide = score("zoo:cnn:channels=128-128-128,convs=2,input=1x28x28,classes=10,seed=0");
    let wide = wide.unwrap();
    // ~3e5 units a sample: det K is near units^32 = 1e175..; its log is finite.
    assert!(narrow.is_finite() && wide.is_finite(), "{narrow} {wide}");
    assert!(
        wide > narrow + 50.0,
        "a wider net tells samples apart better: {narrow} {wide}"
    );
    let vit =
        score("zoo:vit-tiny:patch=7,dim=32,depth=1,heads=1,mlp=64,input=1x28x28,classes=10,seed=0");
    assert!(vit.is_some_and(f64::is_finite));
    assert_eq!(
        score("zoo:cnn:channels=8,input=1x28x28,classes=10,seed=0"),
        Some(narrow),
        "the same model, the same score"
    );

    // Warm start: 4 x 4 candidates drawn, the 4 the proxy ranks best train.
    s.warm_start = Some(WarmStart::Naswot);
    let result = run(&s);
    assert_eq!(result.candidates, 4 * 4);
    let mut by_score: Vec<(f64, &str)> = result
        .trials
        .iter()
        .map(|t| (t.proxy.unwrap_or(f64::NEG_INFINITY), t.id.as_str()))
        .collect();
    by_score.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let best: HashSet<&str> = by_score[..4].iter().map(|(_, id)| *id).collect();
    let trained: HashSet<&str> = result
        .trials
        .iter()
        .filter(|t| !t.rung_accuracy.is_empty())
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(trained, best);
    assert!(result.trials.iter().all(|t| t.proxy.is_some()));

    // Ranked by parameter count (a work folder of its own, whose journals hold only this
    // run's training): the same 16 draws, the 4 with the most parameters train.
    s.warm_start = Some(WarmStart::Params);
    s.work_dir = dir.join("work-params");
    let result = run(&s);
    assert_eq!(result.candidates, 4 * 4);
    let mut by_params: Vec<(u64, &str)> = (result.trials.iter())
        .map(|t| (t.measurement.parameters, t.id.as_str()))
        .collect();
    by_params.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let most: HashSet<&str> = by_params[..4].iter().map(|(_, id)| *id).collect();
    let trained: HashSet<&str> = (result.trials.iter())
        .filter(|t| !t.rung_accuracy.is_empty())
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(trained, most);
}
