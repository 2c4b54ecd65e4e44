"""The app's glossary: every term shown on screen, explained in this project's own words.

Pure data plus a search function (no Textual): the TUI's glossary screen and
the help for the focused widget read it, and a test checks that every term
the screens show has an entry.

API::

    search("speedup")        -> [Entry, ...]  best matches first (term, then text)
    lookup("Baseline MS")    -> Entry | None  (case-insensitive, aliases too)
    AREA_TERMS["opt-layers"] -> terms explaining one area of a screen
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    term: str
    text: str
    aliases: tuple[str, ...] = field(default_factory=tuple)
    topic: str = "general"


ENTRIES: list[Entry] = [
    # ---------------------------------------------------------------- model and layers
    Entry("Layer", "One node of the ONNX graph, at any depth (the bodies of If, Loop and Scan included). "
          "Its id is the name of its first output, the same in every profile, plan and pruned file.", topic="model"),
    Entry("Layer Depth", "Where a layer runs in the model, counted from 0 in execution order. Charts use it "
          "as their x axis so the bars read from the input to the output.", ("depth",), "model"),
    Entry("Prunable layer", "A Conv, ConvTranspose, Gemm or MatMul (or a quantized form of one) whose weight "
          "is a constant of the file. Only these get a sparsity in a plan.", ("prunable",), "model"),
    Entry("Params", "How many numbers the model stores as weights, biases and normalization values; a tensor "
          "shared by several layers counts once. Shape and index tensors are not params.",
          ("parameters", "params reduction"), "model"),
    Entry("FLOPs", "Floating-point operations for one inference at the chosen batch size; a multiply-add "
          "counts as 2. A '?' means the shape was unknown: we never guess 0.", ("flops reduction", "flops"), "model"),
    Entry("Sparsity", "The share of a weight tensor's elements that are exactly zero. Pruning to s zeroes "
          "round(s x n) weights, the smallest in magnitude first.", ("sparsity level",), "model"),
    Entry("Engine-internal rows", "Steps an engine runs that are not a node of the ONNX file (DeepSparse's "
          "data shuffles, for example). They are timed and shown after the layer they follow, but they cannot "
          "be pruned and keep their time in every estimate.", ("engine internal", "engine-internal"), "model"),
    # ---------------------------------------------------------------- performance
    Entry("Baseline MS", "Milliseconds the dense model (or one layer) needs for one batch, the median over "
          "repeated runs. Every estimate is measured against it.", ("baseline", "base ms"), "perf"),
    Entry("Items per Second", "Throughput of the dense model: batch size x 1000 / Baseline MS.",
          ("throughput", "items/s"), "perf"),
    Entry("Performance Sensitivity", "The time a layer saves when it alone is pruned to a sparsity: its baseline "
          "ms minus its ms at that sparsity. Big values are where pruning buys speed. Between measured levels "
          "the value is interpolated.", ("perf sensitivity", "perf sens"), "perf"),
    Entry("Approximated Profile", "A profile computed without running an engine: times from FLOPs, loss "
          "sensitivity from weight magnitudes. Good enough to explore, labelled 'approximated' everywhere it is "
          "used; measure a real profile before trusting a number.", ("approximated", "approx"), "perf"),
    Entry("Performance profile", "Per-layer times of the model measured by an engine (DeepSparse or ONNX "
          "Runtime) at several sparsity levels, for one batch size and core count.", ("perf profile",), "perf"),
    Entry("Profile comparison", "Two performance profiles side by side, layer by layer: B minus A (difference "
          "in ms) and B / A (ratio; below 1 means B is faster). Use it for batch sizes, core counts, engines, "
          "machines, or the dense and pruned models of a validation.", ("compare", "ratio", "difference"), "perf"),
    Entry("Sweep profile", "A performance profile measured by a sweep (`sparsify-tui sweep`): the same model on "
          "every benchmark server of a Ray cluster (or this machine), for each batch size, core count and engine "
          "asked for. It records which server measured it and that server's machine summary. The comparison "
          "offers sweep profiles grouped by server, batch size and cores.", ("sweep", "sweep profiles"), "perf"),
    Entry("Scaling chart", "Items per Second of the sweep profiles against the core count (for one batch size) "
          "or against the batch size (for one core count), one line per server. Lines that keep rising use the "
          "added cores or the bigger batches well; a flat or falling line means they buy nothing there.",
          ("scaling", "scaling view"), "perf"),
    # ---------------------------------------------------------------- loss
    Entry("Loss Sensitivity", "How much the model's output moves when one layer alone is pruned to a "
          "sparsity. The approximated profile uses a weight-magnitude proxy; the one-shot profile measures the "
          "change of the outputs on sample inputs. Higher means the layer is riskier to prune.",
          ("loss sens", "loss sensitivity"), "loss"),
    Entry("Sensitivity rank", "Layers are ranked by their sensitivity at 90% sparsity among the prunable "
          "layers: 'top 5%' are the most sensitive, then 'high', 'medium' and 'low' by thirds.",
          ("rank", "top 5%", "high", "medium", "low"), "loss"),
    Entry("Output change", "How far the outputs of a changed model (one layer pruned or quantized, the pruned "
          "plan, the INT8 model) move from the original's on the same sample inputs: the tool's measure of "
          "accuracy without labels. Each output gets a metric that suits it: KL divergence with top-1 agreement "
          "for class scores, cosine distance for embeddings, relative RMS change for maps and boxes, changed "
          "elements for integers. The value is the sum over the outputs; the unit and a sentence ('top-1 "
          "changed on 2 of 32 samples; logits moved 2.2% RMS') are shown beside it. 0 means unchanged.",
          ("int8 output change", "loss proxy", "output change metric"), "loss"),
    Entry("KL divergence", "For class scores: how much the predicted class distribution (softmax) moved, in "
          "nats; 0 when identical, about 0.01 a small shift. Huge logits make the softmax one-hot and the KL "
          "blind, so the scores are first divided by a temperature T (T = 1 for ordinary trained classifiers, "
          "larger for logits spanning thousands); when even that saturates, the relative RMS change of the "
          "logits is used and a note says so.", ("kl", "nats", "temperature"), "loss"),
    Entry("Top-1 agreement", "For class scores: the share of samples whose highest-scoring class stays the same "
          "(top-1 changed is the rest). It is shown beside the KL divergence and counted in samples.",
          ("top-1", "top-1 changed", "top1"), "loss"),
    Entry("Cosine distance", "For embeddings: 1 minus the cosine of the angle between the original and the "
          "changed vector, averaged over the samples. 0 means the same direction, 1 orthogonal.",
          ("cosine",), "loss"),
    Entry("Relative RMS change", "For maps, boxes and other values: the RMS of the change divided by the RMS "
          "of the original output, in percent (2% = the values moved by 2% of their size). Its square, the "
          "normalized squared error ||y - y'||^2 / ||y||^2, is the value that enters the output change. An "
          "output that is all zeros or about zero (RMS below 1e-6) gets the plain RMS change in its own units "
          "instead: a relative change over ~0 would only measure noise.",
          ("rms", "normalized squared error", "nse", "relative rms"), "loss"),
    Entry("Mean absolute change", "For maps bounded in [0, 1] (a Sigmoid or Softmax output such as a text "
          "detector's probability map): the mean over the elements of |y - y'|, in the map's own units, with the "
          "share of decisions at 0.5 that flipped beside it. A map near zero everywhere reads ~0, not a relative "
          "blow-up.", ("mean_abs", "mae", "flipped", "decisions flipped", "map"), "loss"),
    Entry("Changed elements", "For integer outputs (ids, masks, class indices): the share of elements that "
          "differ from the original's.", ("changed fraction", "changed_fraction"), "loss"),
    # ---------------------------------------------------------------- optimizer
    Entry("Optimization", "A sparsification plan: a target sparsity, how it is spread over the layers, and "
          "the training schedule (epochs, pruning range, learning rate) written out as a SparseML recipe.",
          ("plan", "version", "optimization version"), "optim"),
    Entry("Target sparsity", "The share of all prunable weights the plan sets to zero. The allocation spreads "
          "it over the layers: more where it buys speed and costs little loss.", ("target",), "optim"),
    Entry("Balance", "How the allocation trades speed against recovery: 0 spends the sparsity where it saves the "
          "most time, 1 where it hurts the loss least; 0.5 weighs both.", ("balance performance recovery",), "optim"),
    Entry("Estimated Speedup", "Baseline MS divided by the estimated time of the whole model with the plan's "
          "sparsities (layer savings from the perf profile, assumed additive). With an approximated profile it "
          "is a FLOPs-based guess.", ("speedup", "estimated speedup factor"), "optim"),
    Entry("Estimated Time vs Baseline", "The model's estimated time with the plan next to its Baseline MS. For "
          "a layer: its time at its planned sparsity next to its baseline time.",
          ("estimated time", "est ms"), "optim"),
    Entry("Speedup factor", "For one layer: its baseline time divided by its estimated time at its planned "
          "sparsity.", ("layer speedup",), "optim"),
    Entry("Recovery Confidence", "A heuristic from 1 (nothing pruned) to 0 (every layer at 99%): one minus the "
          "loss sensitivity the plan takes on, relative to pruning everything to 99%. Compare plans of one model "
          "with it; it is not a measured accuracy.", ("recovery",), "optim"),
    Entry("FLOPs Reduction", "FLOPs of the dense model divided by the FLOPs left when every pruned layer keeps "
          "(1 - s) of its FLOPs.", (), "optim"),
    Entry("Params Reduction", "All params divided by the params that remain non-zero after pruning (also "
          "called compression).", ("compression",), "optim"),
    Entry("Override", "A sparsity you type for one layer; the allocation keeps it and spreads the rest of the "
          "target over the other layers. Reset it to hand the layer back to the allocation.",
          ("sparsity override",), "optim"),
    Entry("Excluded layer", "A layer left dense on purpose: by you, because it is not prunable or too small, or "
          "because a filter removed it. The reason is shown in its row.", ("exclusion", "excluded"), "optim"),
    Entry("Filters", "Minimum sparsity, minimum speedup and minimum recovery: a layer whose planned value falls "
          "below a filter is left dense. 0 switches a filter off.",
          ("min sparsity", "min speedup", "min recovery", "filter"), "optim"),
    Entry("Protect edges", "On by default: the stem (the layer reading the model input), the output heads (the "
          "last prunable layers before an output) and tiny layers (fewer weights than Tiny layer, 1024) are left "
          "dense with the reason in their row, because pruning them saves little and can wreck every output. "
          "Off plans them like the others.", ("stem", "head", "tiny layer", "prune edges"), "optim"),
    Entry("Max sparsity", "The per-layer cap the allocation never exceeds.", ("cap",), "optim"),
    Entry("Buckets", "The plan groups its layers into at most this many sparsity values, one pruning modifier "
          "each, so the recipe stays readable. 0 keeps one value per layer.", (), "optim"),
    # ---------------------------------------------------------------- schedule
    Entry("Epochs", "How many passes over the training data the recipe plans for. Changing it rescales the "
          "default schedule (pruning and learning-rate ranges).", (), "schedule"),
    Entry("Epoch Range", "The epochs the recipe covers, from its start to its end (written as "
          "!EpochRangeModifier).", ("epoch range modifier",), "schedule"),
    Entry("Stabilization range", "The first epochs, trained dense so the optimizer's state settles before any "
          "weight is removed.", ("stabilization",), "schedule"),
    Entry("Pruning range", "The epochs during which gradual magnitude pruning raises each layer's sparsity from "
          "the initial to its final value.", ("pruning", "pruning start", "pruning end"), "schedule"),
    Entry("Fine-tuning range", "The epochs after pruning: the masks stay fixed and the model recovers its "
          "accuracy, usually with a decaying learning rate.", ("fine-tuning", "fine tuning", "recovery range"),
          "schedule"),
    Entry("Update frequency", "Every how many epochs the pruning masks are recomputed during the pruning range "
          "(smaller = more, gentler steps).", ("update freq",), "schedule"),
    Entry("Initial sparsity", "The sparsity every pruned layer jumps to at the start of the pruning range.",
          ("init sparsity",), "schedule"),
    Entry("Interpolation", "How sparsity grows between the start and the end of pruning: linear, cubic (fast "
          "at first, slow near the end) or inverse cubic (slow, then fast).", ("inter_func",), "schedule"),
    Entry("Mask type", "The shape of what is zeroed: unstructured (single weights), block4 (groups of 4, which "
          "suits INT8 engines), channel or filter (whole rows).", ("mask",), "schedule"),
    Entry("Learning-rate modifiers", "Rules for the learning rate over epochs: set (a constant), step (times "
          "gamma every step size epochs), multi_step (times gamma at milestones), exponential (times gamma every "
          "epoch) or cosine (warm restarts between init_lr and lr_min).",
          ("lr modifier", "learning rate", "lr", "gamma", "step size", "milestones"), "schedule"),
    Entry("Training Summary", "The recipe drawn over epochs: one row per modifier with the stabilization, "
          "pruning and fine-tuning ranges, so gaps and overlaps are easy to see.", ("summary",), "schedule"),
    Entry("Quantization", "INT8 quantization-aware training over the last epochs; the layers most sensitive to "
          "INT8 can be skipped.", ("qat", "int8"), "schedule"),
    # ---------------------------------------------------------------- export and validation
    Entry("Recipe", "A SparseML YAML file listing the modifiers (epoch range, pruning, learning rate, "
          "quantization) that a training script applies.", ("sparseml recipe",), "export"),
    Entry("Name map", "A JSON or CSV file mapping ONNX weight names to your framework's parameter names. "
          "Without it the recipe names ONNX weights, which may not match a PyTorch or Keras model.",
          ("name mapping",), "export"),
    Entry("Code sample", "A short training script for PyTorch, Keras or TensorFlow that applies the recipe: "
          "integration (the lines to add to your own loop) or training (a whole example).",
          ("framework", "integration", "training"), "export"),
    Entry("Validation", "The plan applied for real: the model is pruned one-shot (no training) to the plan's "
          "sparsities and the dense and pruned files are timed alternately by the same engine. Measured speedup "
          "next to the estimate tells how far to trust the estimates.",
          ("measured speedup", "validate"), "export"),
    Entry("Summary Type", "In the layer summaries: baseline values, the values at one of the profile's sparsity "
          "levels, or 'optimized' (Current Timing, FLOPS and Parameters under the selected optimization).",
          ("optimized", "current timing", "current flops", "current parameters"), "model"),
    Entry("Value Display", "Numbers as measured, as a percent of the total over all layers, or as their natural "
          "log.", (), "model"),
    Entry("Stale", "The model file changed after the profile was measured: it is kept but may be wrong.",
          (), "perf"),
    Entry("Average Sensitivity", "The mean Loss Sensitivity of the prunable layers at the loss profile's "
          "evaluation sparsity (0.9 unless the profile says otherwise): one number for how much this model's "
          "output moves when its layers are pruned. Shown as 'Avg Sensitivity' on the overview.",
          ("avg sensitivity", "avg", "average loss sensitivity"), "loss"),
    Entry("Instruction Set", "The CPU's vector instructions the engines can use (AVX2, AVX-512, AVX-512 VNNI, "
          "...), shown as ISA. DeepSparse needs AVX2 at least; VNNI speeds up INT8.",
          ("isa", "instruction set architecture"), "perf"),
    Entry("Layer Attributes", "The selected layer's ONNX details in the layer summaries: op type, the shapes of "
          "its inputs, outputs and weight, its attributes (strides, pads, groups ...), params and FLOPs.",
          ("attributes",), "model"),
    Entry("Estimated Recovery", "How much of the dense model's accuracy the plan is expected to keep after "
          "training; this app gives it as the Recovery Confidence heuristic, not as a measured accuracy.",
          ("recovery", "est. recovery"), "optim"),
    Entry("Total Sparsity", "The share of all prunable weights of the model that the plan sets to zero, "
          "overridden and excluded layers included: the Achieved sparsity next to the target.",
          ("achieved sparsity", "overall sparsity"), "optim"),
    Entry("Thread", "One worker of the engine. A profile runs one thread per core it is given ('c2' in a "
          "profile's name: 2 cores); times change with the core count, so compare profiles with the same one.",
          ("threads", "cores", "core count"), "perf"),
    Entry("Layer Timings", "The per-layer milliseconds of a performance profile: each layer's time in the "
          "dense model and at each measured sparsity level. They sum to roughly the model's time; the rest is "
          "engine overhead.", ("layer timing", "timings"), "perf"),
    Entry("MS per Batch", "Milliseconds for one inference of a whole batch (batch size items at once); "
          "Baseline MS is the dense model's MS per Batch.", ("ms/batch", "ms per batch"), "perf"),
    Entry("Output change", "How far the pruned (or quantized) model's outputs moved from the dense model's, "
          "on the same inputs: KL divergence for probabilities and logits, normalized squared error otherwise, "
          "summed over the outputs. 0 = identical; it is unitless and only comparable within one model.",
          ("output change", "loss proxy"), "loss"),
]

# which terms explain each area of the screens (widget ids), for the help of the focused widget
AREA_TERMS: dict[str, list[str]] = {
    "opt-settings": ["Target sparsity", "Balance", "Epochs", "Pruning range", "Update frequency", "Mask type",
                     "Interpolation", "Initial sparsity", "Filters", "Max sparsity", "Buckets"],
    "opt-layers": ["Sparsity", "Override", "Speedup factor", "Estimated Time vs Baseline", "Loss Sensitivity",
                   "Performance Sensitivity", "Sensitivity rank", "Excluded layer"],
    "opt-estimates": ["Estimated Speedup", "Estimated Time vs Baseline", "FLOPs Reduction", "Params Reduction",
                      "Recovery Confidence", "Approximated Profile"],
    "opt-lr": ["Learning-rate modifiers", "Epoch Range"],
    "opt-summary": ["Training Summary", "Stabilization range", "Pruning range", "Fine-tuning range",
                    "Learning-rate modifiers"],
    "opt-edit": ["Target sparsity", "Override", "Learning-rate modifiers"],
    "compare-table": ["Profile comparison", "Baseline MS", "Engine-internal rows", "Validation"],
    "compare-scaling": ["Scaling chart", "Sweep profile", "Items per Second", "Baseline MS"],
    "export-recipe": ["Recipe", "Name map", "Code sample"],
    "export-code": ["Code sample", "Name map"],
    "export-validation": ["Validation", "Estimated Speedup", "Output change", "KL divergence", "Top-1 agreement",
                          "Cosine distance", "Relative RMS change"],
    "layer-table": ["Layer Depth", "Params", "FLOPs", "Baseline MS", "Performance Sensitivity",
                    "Loss Sensitivity", "Summary Type", "Value Display"],
}

_BY_NAME: dict[str, Entry] = {}
for _e in ENTRIES:
    _BY_NAME[_e.term.lower()] = _e
for _e in ENTRIES:
    for _a in _e.aliases:
        _BY_NAME.setdefault(_a.lower(), _e)


def lookup(term: str) -> Entry | None:
    """The entry for ``term`` or one of its aliases (case-insensitive)."""
    return _BY_NAME.get(term.strip().lower())


def search(query: str) -> list[Entry]:
    """Entries matching every word of ``query``: term matches first, then aliases, then the text."""
    words = [w for w in query.lower().split() if w]
    if not words:
        return list(ENTRIES)
    scored: list[tuple[int, int, Entry]] = []
    for i, e in enumerate(ENTRIES):
        term = e.term.lower()
        aliases = " ".join(e.aliases).lower()
        text = e.text.lower()
        score = 0
        for w in words:
            if term.startswith(w):
                score += 4
            elif w in term:
                score += 3
            elif w in aliases:
                score += 2
            elif w in text:
                score += 1
            else:
                score = -1
                break
        if score > 0:
            scored.append((-score, i, e))
    scored.sort(key=lambda x: (x[0], x[1]))
    return [e for _, _, e in scored]


def area_entries(area_id: str | None) -> list[Entry]:
    """The entries explaining the area ``area_id`` (a widget id), in order; [] when unknown."""
    out = []
    for t in AREA_TERMS.get(area_id or "", []):
        e = lookup(t)
        if e is not None and e not in out:
            out.append(e)
    return out
