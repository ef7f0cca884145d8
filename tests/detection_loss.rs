//! Training on detection data (a `Dataset` with `objects`, built by hand here): the targets a
//! task derives from the objects (localization: `object`, the class, `box`; YOLO: the grid
//! targets), the shipped `specs/localize.net` and `specs/yolo_tiny.net` training on them with
//! a decreasing loss, and the errors for data that cannot feed an objective.

use std::sync::Arc;

use netc::data::{Dataset, Loader, LoaderOptions, Normalize, Pixels};
use netc::detect::Object;
use netc::io::weights::Weights;
use netc::train::Trainer;
use netc::train::graph::objective_of;
use netc::train::task::Task;
use netc::train_config::Optimizer;
use netc::{Options, load_file};

const SIZE: usize = 96;

/// A small deterministic generator (splitmix64 to [0, 1)).
struct Rand(u64);

impl Rand {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `n` 96×96 images on a dark background, most with one or two bright rectangles (class `k`
/// drawn at brightness `0.4 + 0.2·k`), some empty; their objects in YOLO coordinates.
fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut r = Rand(seed);
    let mut pixels = vec![0f32; n * SIZE * SIZE];
    let mut objects = Vec::new();
    for i in 0..n {
        let img = &mut pixels[i * SIZE * SIZE..(i + 1) * SIZE * SIZE];
        for p in img.iter_mut() {
            *p = 0.1 * r.next();
        }
        let count = match i % 4 {
            0 => 0,
            3 => 2,
            _ => 1,
        };
        let mut objs = Vec::new();
        for _ in 0..count {
            let class = (r.next() * 3.0) as usize;
            let (w, h) = (0.15 + 0.35 * r.next(), 0.15 + 0.35 * r.next());
            let (cx, cy) = (
                w / 2.0 + (1.0 - w) * r.next(),
                h / 2.0 + (1.0 - h) * r.next(),
            );
            let o = Object {
                class,
                cx,
                cy,
                w,
                h,
                landmarks: vec![],
            };
            let [x1, y1, x2, y2] = o.xyxy().map(|v| (v * SIZE as f32) as usize);
            for y in y1..y2.min(SIZE) {
                for x in x1..x2.min(SIZE) {
                    img[y * SIZE + x] = 0.4 + 0.2 * class as f32;
                }
            }
            objs.push(o);
        }
        objects.push(objs);
    }
    Dataset {
        name: "synthetic detection".into(),
        sample_shape: vec![1, SIZE, SIZE],
        pixels: Pixels::F32(pixels),
        labels: vec![0; n],
        classes: 10,
        class_names: vec![],
        fields: vec![],
        objects,
    }
}

fn spec(path: &str) -> netc::layer_graph::LayerGraph {
    load_file(path, &Options::default()).unwrap().graph
}

fn adam() -> Optimizer {
    Optimizer::Adam {
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

/// Steps `steps` times on one batch of `data` and returns the losses.
fn train(
    lg: &netc::layer_graph::LayerGraph,
    data: Dataset,
    batch: usize,
    steps: usize,
) -> Vec<f32> {
    let objective = objective_of(lg);
    let task = Task::new(lg, &objective, &data).unwrap();
    let loader = Loader::new(
        Arc::new(data),
        Normalize::none(1),
        LoaderOptions::train(batch, 5, vec![]),
    )
    .unwrap();
    let order: Vec<usize> = (0..batch).collect();
    let b = loader.batch(0, &order, 0);
    let mut bufs = Vec::new();
    task.fill(&b, &mut bufs, "sample", 0).unwrap();
    let mut tr = Trainer::new(lg, Weights::init(lg, 3), batch, objective, adam(), 2).unwrap();
    (0..steps)
        .map(|_| tr.step_feed(&task.feed(&bufs), 1e-3).unwrap())
        .collect()
}

#[test]
fn localize_net_trains_on_targets_derived_from_objects() {
    let lg = spec("specs/localize.net");
    let data = synthetic(8, 1);
    let objective = objective_of(&lg);
    let task = Task::new(&lg, &objective, &data).unwrap();
    let inputs: Vec<&str> = task.inputs().collect();
    assert_eq!(
        inputs,
        [
            "image",
            "targets:object",
            "targets:cls",
            "mask:object",
            "targets:box"
        ]
    );
    // The derived targets: sample 0 has no object, sample 1 one.
    let loader = Loader::new(
        Arc::new(data.clone()),
        Normalize::none(1),
        LoaderOptions::eval(8),
    )
    .unwrap();
    let b = loader.batch(0, &(0..8).collect::<Vec<_>>(), 0);
    let mut bufs = Vec::new();
    task.fill(&b, &mut bufs, "sample", 0).unwrap();
    let o = &data.objects[1][0];
    assert_eq!(bufs[1][..2], [0.0, 1.0]);
    assert_eq!(bufs[3][..4], [0.0, 1.0, 1.0, 1.0]);
    assert_eq!(bufs[4][..8], [0.0, 0.0, 0.0, 0.0, o.cx, o.cy, o.w, o.h]);
    assert!(bufs[2][..10].iter().all(|&v| v == 0.0));
    assert_eq!(bufs[2][10 + o.class], 1.0);

    // The class head's accuracy counts the images with an object (6 of these 8), against
    // their first object's class: scores right on all but sample 7.
    let mut scores = vec![0f32; 80];
    for (i, objs) in data.objects.iter().enumerate() {
        if let Some(o) = objs.first() {
            let guess = if i == 7 { (o.class + 1) % 10 } else { o.class };
            scores[i * 10 + guess] = 1.0;
        }
    }
    // The presence logit: right on all 8 but sample 0 (no object, logit 1 says one).
    let presence: Vec<f32> = data
        .objects
        .iter()
        .enumerate()
        .map(|(i, objs)| if objs.is_empty() && i != 0 { -2.0 } else { 3.0 })
        .collect();
    // The box: exact for every image with an object but sample 1, whose box is shifted by
    // half its width (IoU 1/3).
    let mut boxes = vec![0f32; 32];
    for (i, objs) in data.objects.iter().enumerate() {
        if let Some(o) = objs.first() {
            let shift = if i == 1 { o.w / 2.0 } else { 0.0 };
            boxes[i * 4..i * 4 + 4].copy_from_slice(&[o.cx + shift, o.cy, o.w, o.h]);
        }
    }
    let mut sums = netc::train::checkpoint::EpochSums::default();
    task.measure(
        &b,
        1.0,
        |n| match n {
            "cls" => Some(scores.as_slice()),
            "object" => Some(presence.as_slice()),
            "box" => Some(boxes.as_slice()),
            _ => None,
        },
        &mut sums,
    );
    let m = task.summarize(&sums);
    assert_eq!(m.get("cls_accuracy"), Some(&(5.0 / 6.0)), "{m:?}");
    assert_eq!(m.get("object_accuracy"), Some(&(7.0 / 8.0)), "{m:?}");
    let iou = m["box_iou"];
    assert!((iou - (5.0 + 1.0 / 3.0) / 6.0).abs() < 1e-6, "{m:?}");

    let losses = train(&lg, data, 8, 15);
    println!("localize.net losses: {losses:?}");
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.7 * first, "the loss went from {first} to {last}");
}

#[test]
fn yolo_tiny_trains_on_grid_targets_encoded_from_objects() {
    let lg = spec("specs/yolo_tiny.net");
    let data = synthetic(8, 2);
    let losses = train(&lg, data, 8, 15);
    println!("yolo_tiny.net losses: {losses:?}");
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.7 * first, "the loss went from {first} to {last}");
}

#[test]
fn data_that_cannot_feed_a_detection_objective_is_refused() {
    let lg = spec("specs/yolo_tiny.net");
    let objective = objective_of(&lg);
    // No objects at all.
    let mut plain = synthetic(4, 3);
    plain.objects.clear();
    let err = Task::new(&lg, &objective, &plain).unwrap_err();
    assert!(
        err.contains("needs object annotations (boxes), and synthetic detection has none"),
        "{err}"
    );
    // A class beyond the head's: an error naming the sample and the object.
    let mut data = synthetic(4, 3);
    data.objects[2] = vec![Object {
        class: 12,
        cx: 0.5,
        cy: 0.5,
        w: 0.2,
        h: 0.2,
        landmarks: vec![],
    }];
    let task = Task::new(&lg, &objective, &data).unwrap();
    let loader = Loader::new(Arc::new(data), Normalize::none(1), LoaderOptions::eval(4)).unwrap();
    let b = loader.batch(0, &[0, 1, 2, 3], 0);
    let err = task.fill(&b, &mut Vec::new(), "sample", 0).unwrap_err();
    assert!(
        err.starts_with(
            "synthetic detection: sample 2: object 0 has class 12, but the model has 10 classes"
        ),
        "{err}"
    );
    // A mask with no data behind it.
    let lg = spec("specs/localize.net");
    let err = Task::new(&lg, &objective_of(&lg), &plain).unwrap_err();
    assert!(
        err.contains("and synthetic detection has no values named `object`"),
        "{err}"
    );
    let masked = netc::load_str(
        "m.net",
        "model m {\n input x: [1, 96, 96]\n flatten\n box = dense(4)\n output box\n \
         train { loss: mse(output=box, mask=present) }\n}\n",
        &Options::default(),
    )
    .unwrap()
    .graph;
    let err = Task::new(&masked, &objective_of(&masked), &synthetic(4, 3)).unwrap_err();
    assert!(
        err.contains(
            "is masked by `present`, and synthetic detection has no values named `present`"
        ),
        "{err}"
    );
}

/// The `loss:` syntax of the detection terms: each mistake an error at its place in the spec,
/// saying what was expected (and the fix for a head of the wrong width).
#[test]
fn bad_anchors_heads_and_masks_are_errors_in_the_spec() {
    let model = |head: usize, loss: &str| {
        format!(
            "model m {{\n input x: [1, 32, 32]\n conv(8, 3, stride=2)\n relu\n \
             grid = conv({head}, 1)\n e = x |> flatten |> dense(4)\n output grid, e\n \
             train {{ loss: {loss} }}\n}}\n"
        )
    };
    let cases = [
        (
            model(41, "yolo(output=grid, anchors=[[4, 4], [8, 8]])"),
            "the `yolo` loss with 2 anchors reads A·(5+C) channels (a multiple of 2, at least \
             12); the output `grid` has 41 ([41, 15, 15])",
        ),
        (
            model(40, "yolo(output=grid, anchors=[[4, 4], [8, 8]], classes=3)"),
            "help: with 2 anchors and 3 classes, make the head's last layer `conv(16, 1)`",
        ),
        (
            model(16, "yolo(output=grid, anchors=[4, 4, 8])"),
            "anchors come in pairs (width, height); 3 numbers are given",
        ),
        (
            model(16, "yolo(output=grid, anchors=[[4, 0], [8, 8]])"),
            "anchor sizes must be positive numbers, found 0",
        ),
        (
            model(16, "yolo(output=grid)"),
            "the `yolo` loss needs its anchor boxes",
        ),
        (
            model(16, "yolo(output=e, anchors=[[4, 4], [8, 8]])"),
            "the `yolo` loss reads a grid head [A·(5+C), S, S]; the output `e` is [4]",
        ),
        (
            model(16, "yolo(output=grid, anchors=[[4, 4], [8, 8]], noobj=-1)"),
            "noobj must be a number ≥ 0, found -1",
        ),
        (
            model(
                16,
                "yolo(output=grid, anchors=[[4, 4], [8, 8]], mask=object)",
            ),
            "the `yolo` loss takes no mask",
        ),
        (
            model(16, "mse(output=e, mask=object, mask=object)"),
            "the mask of a loss is given twice",
        ),
        (
            model(16, "mse(output=e, mask=[1, 0])"),
            "expected the name of per-sample 0/1 values in the data",
        ),
    ];
    for (src, want) in cases {
        let err = netc::load_str("m.net", &src, &Options::default())
            .err()
            .unwrap_or_else(|| panic!("accepted: {src}"))
            .to_string();
        assert!(err.contains(want), "{want}\n--- got:\n{err}");
        assert!(err.contains("m.net:8:"), "no position: {err}");
    }
    // The good forms: pairs or a flat list, the same anchors.
    for anchors in ["[[4, 4], [8, 8]]", "[4, 4, 8, 8]"] {
        let src = model(16, &format!("yolo(output=grid, anchors={anchors})"));
        let lg = netc::load_str("m.net", &src, &Options::default())
            .unwrap()
            .graph;
        assert_eq!(
            objective_of(&lg).to_string(),
            "yolo(output=grid, anchors=[[4, 4], [8, 8]], classes=3, coord=5, noobj=0.5)"
        );
    }
}

/// The whole training loop (`session::run`, as `netc train` calls it) on detection data: the
/// YOLO and localization specs train and evaluate each epoch on a held-out split, the
/// localization class head reporting its accuracy over images with an object.
#[test]
fn the_training_loop_trains_and_evaluates_on_detection_data() {
    use netc::train::session::{Quiet, Settings, run};
    for (path, metric) in [
        ("specs/localize.net", Some("test_cls_accuracy")),
        ("specs/yolo_tiny.net", None),
    ] {
        let lg = spec(path);
        let data = netc::data::Split {
            train: synthetic(16, 4),
            test: synthetic(6, 5),
        };
        let settings = Settings {
            epochs: 2,
            batch: 4,
            objective: objective_of(&lg),
            optimizer: adam(),
            schedule: netc::train_config::Schedule::Constant { warmup: 0 },
            seed: 1,
            threads: 2,
            augment: vec![],
            normalize: Normalize::none(1),
            checkpoint: None,
            max_steps: None,
            memory_limit: None,
            identities: None,
            mining: Default::default(),
            no_cache: true,
        };
        let report = run(
            &lg,
            Weights::init(&lg, 2),
            None,
            &data,
            &settings,
            &mut Quiet,
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        let h = &report.progress.history;
        assert_eq!(h.len(), 2, "{path}");
        println!("{path}: {h:?}");
        // The held-out loss falls (the training loss of a few small YOLO batches is too noisy
        // to compare epoch by epoch: a batch's loss sums over its boxes).
        let test = |i: usize| h[i].test_loss.expect("evaluated");
        assert!(test(1) < test(0), "{path}: {h:?}");
        if let Some(m) = metric {
            let acc = h[1].metrics.get(m).copied();
            assert!(
                acc.is_some_and(|a| (0.0..=1.0).contains(&a)),
                "{path}: {m} {acc:?}"
            );
        }
    }
}
