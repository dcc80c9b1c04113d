"""Which runs the AllNC paper reproduction trains: the families (a dataset / model pairing and its
recipes) of each profile, the runs they plan, and the order they train in.

A :class:`Run` is one ``allnc-train`` run (a bundled config and its overrides) at one imbalance ratio
and seed; its name, ``<family>/<kind>[_r<beta>][_s<seed>]``, is its folder under ``OUT/runs/``.

>>> [r.name for r in plan_runs(profile_families("smoke", with_cifar=False), {})][:3]
['ufm10/ce_bal', 'ufm10/ce_lt_r100', 'ufm10/allnc_lt_r100']
"""
from __future__ import annotations

from dataclasses import dataclass, field

ABLATIONS = {"allnc_no_hycon": "hycon.enabled=false", "allnc_no_p2p": "p2p.enabled=false",
             "allnc_no_gbbn": "gbbn.enabled=false"}
# The controls of the evidence study (allnc_train.methods.allnc.CONTROLS), each a bundled config NAME_<control>.
CONTROLS = ("allnc_p2p_align_only", "allnc_no_hycon_views", "allnc_no_decoupling", "allnc_running_prototypes")
LABELS = {"ce_bal": "CE balanced", "ce_lt": "CE-LT", "la": "LA-LT", "etf": "ETF-LT", "etf_dr": "ETF+DR-LT",
          "bbn": "BBN-LT", "allnc_lt": "AllNC-LT", "allnc_no_hycon": "AllNC w/o HyCon", "allnc_no_p2p": "AllNC w/o P2P",
          "allnc_no_gbbn": "AllNC w/o GBBN", "allnc_p2p_align_only": "AllNC, P2P alignment only",
          "allnc_no_hycon_views": "AllNC w/o HyCon, views to CE", "allnc_no_decoupling": "AllNC w/o decoupling",
          "allnc_running_prototypes": "AllNC, running prototypes"}
# The method column of the results CSV for each kind of run (ablations keep their kind).
METHOD = {"ce_bal": "ce", "ce_lt": "ce", "allnc_lt": "allnc"}
# The runs the paper's comparison figures show: the classifier-only fixes (LA, ETF) are its foil.
COMPARED = ("ce_bal", "ce_lt", "la", "etf", "allnc_lt")


@dataclass(eq=False)  # hashed by identity
class Family:
    """One dataset / model pairing: which configs, with which overrides, at which ratios."""

    name: str
    description: str
    ratios: list[float]
    ablation_ratio: float | None  # where the baselines, controls and ablations run (None: none of them)
    config: dict[str, str]  # kind (ce_bal, ce_lt, allnc_lt) -> bundled config name; {r} = the ratio
    common: list[str] = field(default_factory=list)  # overrides for every run
    balanced: list[str] = field(default_factory=list)  # extra overrides for the balanced run
    lt: list[str] = field(default_factory=list)  # extra overrides for the long-tailed runs
    set_ratio: bool = False  # pass data.imbalance_ratio=r (configs that do not carry the ratio in their name)
    real_data: bool = False
    # further methods and controls at ablation_ratio (la, etf, etf_dr, bbn, the CONTROLS: self.config[kind])
    baselines: tuple[str, ...] = ()
    seeds: dict[str, list[int]] = field(default_factory=dict)  # kind -> training seeds (default: default_seeds)
    default_seeds: list[int] = field(default_factory=lambda: [0])
    # training order (kinds, first = first); None: the longest runs first. An order puts the runs a claim needs
    # first, so that an interrupted profile has its most informative results already
    order: tuple[str, ...] | None = None
    seed_order: tuple[str, ...] | None = None  # the order of the later seeds' runs (None: ``order``)
    ablations: bool = True  # AllNC without each part at ablation_ratio

    @property
    def ablated_at(self) -> float | None:
        """The ratio at which AllNC's ablations run; None when this family trains none."""
        return self.ablation_ratio if self.ablations else None


def _ufm(epochs: int | None = None, n_max: int | None = None, ratios=(10, 50, 100)) -> Family:
    common = ["run.device=cpu", "run.progress=false"]
    common += [f"optim.epochs={epochs}"] if epochs else []
    common += [f"data.n_max={n_max}"] if n_max else []
    from allnc_train.data import lt_class_counts

    # The balanced run gets as many samples as the most imbalanced set (1236 for n_max 500, beta 100),
    # so that every run takes the same number of SGD steps: with 500 per class (5000 samples) the
    # weight decay, applied at every step to every free feature, shrinks the features to zero and
    # CE-balanced ends at chance accuracy (measured: 10 %).
    n_bal = round(sum(lt_class_counts(n_max or 500, 10, max(ratios))) / 10)
    return Family("ufm10", "unconstrained-features model (bundled ufm_lt_r100_* configs: 10 classes, 32-d free "
                  f"features, long-tailed {n_max or 500} down to {n_max or 500}/beta samples per class, balanced "
                  f"{n_bal} per class; SGD lr 0.5, weight decay 2e-3, {epochs or 200} epochs)",
                  list(ratios), max(ratios), {"ce_bal": "ufm_lt_r100_ce", "ce_lt": "ufm_lt_r100_ce",
                                              "allnc_lt": "ufm_lt_r100_allnc"},
                  common, balanced=["data.imbalance_ratio=1", f"data.n_max={n_bal}"], set_ratio=True)


def _cifar_small(n_max_lt: int, n_bal: int, epochs: int, test_per_class: int, ratios=(100,),
                 ablation_ratio=None) -> Family:
    common = ["data.num_workers=0", f"data.test_per_class={test_per_class}", f"optim.epochs={epochs}",
              "optim.batch_size=64", "optim.lr=0.05", "optim.warmup_epochs=1", "run.device=cpu",
              "run.dump_test=false", "run.progress=false"]
    return Family("cifar10", f"ResNet-32 on a CIFAR-10 subset of the JPEG copy (long-tailed: {n_max_lt} down to "
                  f"{n_max_lt}/beta images per class; balanced: {n_bal} per class; {epochs} epochs, batch 64, "
                  f"lr 0.05 cosine, CPU; test: first {test_per_class} test images per class)",
                  list(ratios), ablation_ratio,
                  {"ce_bal": "cifar10_balanced_ce", "ce_lt": "cifar10_lt_r{r}_ce", "allnc_lt": "cifar10_lt_r{r}_allnc"},
                  common, balanced=[f"data.n_max={n_bal}"], lt=[f"data.n_max={n_max_lt}"], real_data=True)


def _cifar_cpu(name: str = "cifar10", n_max: int = 500, epochs: int = 120, weight_decay: float = 2e-4,
               width: int | None = None, baselines: tuple[str, ...] = ("la", "etf", "etf_dr", "bbn"),
               dump_test: bool = False,
               seeds: dict[str, list[int]] | None = None, default_seeds: tuple[int, ...] = (0,), ablations: bool = True,
               order: tuple[str, ...] | None = None, seed_order: tuple[str, ...] | None = None) -> Family:
    """ResNet-32 to the terminal phase on a 2-core CPU: an LDAM subset at beta 100, all 10,000 test images
    (evaluated every 10 epochs and at the end: a pass over them costs about as much as an epoch of
    training). The defaults are the first CPU study's (CIFAR-10, n_max 500: 1,236 images; weight decay 2e-4;
    every method, two seeds for CE-LT and AllNC)."""
    from allnc_train.data import lt_class_counts

    classes = 10 if name == "cifar10" else 100
    counts = lt_class_counts(n_max, classes, 100)
    n_bal = round(sum(counts) / classes)  # the balanced run has the same N
    dumps = ["run.eval_every=10", "run.dump_every=10", "run.dump_test=true"] if dump_test else \
        ["run.eval_every=10", "run.dump_every=5", "run.dump_test=false"]
    common = ["data.num_workers=0", f"optim.epochs={epochs}", "optim.batch_size=64", "optim.lr=0.05",
              "optim.warmup_epochs=5", "run.device=cpu", "run.progress=false", *dumps, "run.dump_dtype=float16"]
    common += [f"optim.weight_decay={weight_decay:g}"] if weight_decay != 2e-4 else []  # 2e-4: the configs' own
    common += [f"model.width={width}"] if width is not None else []  # None: the config's (1; 2 for CIFAR-100)
    config = {"ce_bal": f"{name}_balanced_ce", "ce_lt": f"{name}_lt_r{{r}}_ce", "allnc_lt": f"{name}_lt_r{{r}}_allnc",
              **{k: f"{name}_lt_r{{r}}_{k}" for k in baselines}}
    pretty = name.upper().replace("CIFAR", "CIFAR-")
    width = width or (1 if name == "cifar10" else 2)
    return Family(name, f"ResNet-32{'' if width == 1 else f' (width {width}, d = {64 * width})'} on the LDAM "
                  f"{pretty}-LT subset of the JPEG copy (beta 100, {n_max} down to {counts[-1]} images per class, "
                  f"{sum(counts)} in all; balanced: {n_bal} per class, the same N; {epochs} epochs, batch 64, lr 0.05 "
                  f"cosine, weight decay {weight_decay:g}, CPU; test: all 10,000 test images"
                  f"{', dumped at the end' if dump_test else ''})", [100], 100, config, common,
                  balanced=[f"data.n_max={n_bal}"], lt=[f"data.n_max={n_max}"], real_data=True, baselines=baselines,
                  seeds=seeds if seeds is not None else {"ce_lt": [0, 1], "allnc_lt": [0, 1]},
                  default_seeds=list(default_seeds), ablations=ablations, order=order or (
                      "ce_lt", "allnc_lt", "ce_bal", "etf", "la", "allnc_no_p2p", "etf_dr", "bbn", "allnc_no_hycon",
                      "allnc_no_gbbn"), seed_order=seed_order or (
                      "ce_lt", "allnc_lt", "etf", "ce_bal", "allnc_no_gbbn", "allnc_no_hycon", "allnc_no_p2p", "la",
                      "etf_dr", "bbn"))


# The evidence study's regime: the weight decay experiments/regime_search.py chose on the validation split
# (docs/results/regime_search.csv), everything else as in the first CPU study.
STUDY_WEIGHT_DECAY = 5e-3
STUDY_SEEDS = (0, 1, 2)
# What a claim needs first: the five compared methods on every seed, then the ablations, then the controls.
STUDY_ORDER = ("ce_lt", "allnc_lt", "ce_bal", "la", "etf", "allnc_no_hycon", "allnc_no_p2p", "allnc_no_gbbn",
               *CONTROLS)


def _cifar10_study() -> Family:
    """The evidence study (docs/RESULTS.md): CIFAR-10-LT at the chosen weight decay, three seeds of balanced
    CE, CE, LA, ETF, AllNC, its ablations and the controls, each run's final test-set dump kept."""
    return _cifar_cpu(weight_decay=STUDY_WEIGHT_DECAY, baselines=("la", "etf", *CONTROLS), dump_test=True, seeds={},
                      default_seeds=STUDY_SEEDS, order=STUDY_ORDER, seed_order=STUDY_ORDER)


def _cifar100_study() -> Family:
    """CIFAR-100-LT at the CIFAR-10 study's regime: the smallest n_max that leaves no class empty at beta 100
    (100: 100 ... 1 images per class, 2,131 in all), width-2 ResNet-32 (d = 128 >= 99), two seeds of balanced
    CE, CE, LA, ETF and AllNC."""
    return _cifar_cpu("cifar100", n_max=100, weight_decay=STUDY_WEIGHT_DECAY, baselines=("la", "etf"),
                      dump_test=True, seeds={}, default_seeds=(0, 1), ablations=False,
                      order=("ce_lt", "allnc_lt", "ce_bal", "la", "etf"),
                      seed_order=("ce_lt", "allnc_lt", "ce_bal", "la", "etf"))


def _cifar_full(name: str) -> Family:
    return Family(name, f"ResNet-32 on {name.upper().replace('CIFAR', 'CIFAR-')} (bundled recipes: full data / LDAM "
                  "long-tailed subsets, 200 epochs, batch 128, lr 0.1 cosine, AMP on CUDA)",
                  [10, 50, 100], 100,
                  {"ce_bal": f"{name}_balanced_ce", "ce_lt": f"{name}_lt_r{{r}}_ce",
                   "allnc_lt": f"{name}_lt_r{{r}}_allnc"}, ["run.progress=false"], real_data=True)


def profile_families(profile: str, with_cifar: bool) -> list[Family]:
    if profile == "smoke":
        fams = [_ufm(epochs=4, n_max=100, ratios=(100,))]
        if with_cifar:
            fams.append(_cifar_small(n_max_lt=20, n_bal=4, epochs=1, test_per_class=4, ratios=(10,)))
        return fams
    if profile == "cpu":
        return [_cifar10_study()]
    if profile == "cpu100":
        return [_cifar100_study()]
    if profile == "cpu_v1":
        return [_cifar_cpu()]
    if profile == "quick":
        fams = [_ufm()]
        if with_cifar:
            fams.append(_cifar_small(n_max_lt=300, n_bal=100, epochs=24, test_per_class=50))
        return fams
    return [_cifar_full("cifar10"), _cifar_full("cifar100")]


@dataclass
class Run:
    family: Family
    kind: str  # ce_bal | ce_lt | allnc_lt | allnc_no_*
    ratio: float  # 1 for the balanced run
    config: str
    overrides: list[str]
    seed: int = 0

    @property
    def name(self) -> str:
        name = f"{self.family.name}/{self.kind}" + ("" if self.kind == "ce_bal" else f"_r{self.ratio:g}")
        return name + (f"_s{self.seed}" if self.seed else "")

    @property
    def label(self) -> str:
        return LABELS[self.kind]


def plan_runs(families: list[Family], data_roots: dict[str, str | None]) -> list[Run]:
    runs = []
    for fam in families:
        root = [f"data.root={data_roots[fam.name]}"] if fam.real_data and data_roots.get(fam.name) else []

        def add(kind: str, r: float, config: str, overrides: list[str]) -> None:
            for seed in fam.seeds.get(kind, fam.default_seeds):
                runs.append(Run(fam, kind, r, config.format(r=f"{r:g}"), overrides + ([f"seed={seed}"] if seed else []),
                                seed))

        add("ce_bal", 1, fam.config["ce_bal"], fam.common + root + fam.balanced)
        for r in fam.ratios:
            ratio = [f"data.imbalance_ratio={r:g}"] if fam.set_ratio else []
            for kind in ("ce_lt", "allnc_lt"):
                add(kind, r, fam.config[kind], fam.common + root + fam.lt + ratio)
        if fam.ablation_ratio is not None:
            r = fam.ablation_ratio
            ratio = [f"data.imbalance_ratio={r:g}"] if fam.set_ratio else []
            for kind in fam.baselines:
                add(kind, r, fam.config[kind], fam.common + root + fam.lt + ratio)
            for kind, switch in ABLATIONS.items() if fam.ablated_at is not None else ():
                add(kind, r, fam.config["allnc_lt"], fam.common + root + fam.lt + ratio + [switch])
    return runs


def priority(run: Run) -> tuple:
    """Sort key of the training order: the family's ``order`` (each seed in turn), else the longest first."""
    order = run.family.order if run.seed == 0 else run.family.seed_order or run.family.order
    if order is not None:
        return (run.seed, order.index(run.kind) if run.kind in order else len(order))
    return (0, -_cost(run))


def _cost(run: Run) -> float:
    """Rough relative cost, so that the longest runs start first."""
    method = 3.0 if run.kind.startswith("allnc") else 2.0 if run.kind == "bbn" else 1.0
    balanced = 2.0 if run.kind == "ce_bal" and run.family.name != "cifar10" else 1.0  # more samples than LT
    return method * balanced * (10.0 if run.family.real_data else 1.0)

