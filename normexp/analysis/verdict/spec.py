"""What a claim declares: ``ANALYSIS = ClaimAnalysis(...)`` (usually through its ``Claim``) in
its own file under normexp/analysis/claims/: the blog's words it tests, which collected tables
it reads, how it draws its figure and decides its verdict (both from those tables only; the
figure may also read the results folder, which the caller passes in), which runs decide it and
what its W&B dashboard shows. normexp.analysis.claims finds every declaration.

A claim that reads other claims (C11) reads them through the registry, never their modules:
their architecture of record (``per_architecture``), the runs that decide them (``deciding``)
and how they score a norm on those runs (``score``: the experiment, metric and family rule
they decide with). Each reading claim names them in ``reads_from``; their experiments join its
``reads`` when the registry loads, so it follows them when they change."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from normexp.analysis.columns import Tables
from normexp.analysis.verdict import make_verdict
from normexp.analysis.verdict.architecture import PerArchitecture


@dataclass(frozen=True)
class Quote:
    """The blog's words a claim tests: the Chinese original, quoted from the post, and an English
    rendering."""

    zh: str
    en: str


@dataclass(frozen=True)
class Grid:
    """One panel grid of a claim's W&B dashboard: the runs of some experiments grouped by config
    fields, and the panels that compare the groups (normexp.analysis.report.dashboards builds them).
    Metric names are W&B names (``test/err``); config fields are dotted paths (``norm.name``)."""

    title: str
    experiments: tuple[str, ...]
    group_by: tuple[str, ...]
    bars: tuple[str, ...] = ()  # summary metrics, one bar chart each (mean ± s.e. per group)
    curves: tuple[str, ...] = ()  # per-epoch metrics, one line plot each against the epoch
    scatter: tuple[str, str] | None = None  # (config field, summary metric): one point per run
    parallel: tuple[str, ...] = ()  # config fields then summary metrics
    media: tuple[str, ...] = ()
    where: str = ""  # an extra filter, wandb-workspaces syntax
    log_x: bool = False


@dataclass(frozen=True)
class Score:
    """How a claim scores a norm on the runs that decide it, for a claim that ranks norms by it
    (C11): the one definition the claim decides with, so a reader follows it when it changes."""

    experiment: str  # the experiment whose runs decide the claim
    metric: str  # a summary column
    higher_is_better: bool
    unit: str  # as shown, e.g. "dB of PSNR"
    what: str  # the runs in a few words, e.g. "stylization, CIFAR-10"
    scale: float = 1.0  # metric × scale is shown
    rows: Mapping[str, object] = field(default_factory=dict)  # column -> the value rows keep
    # a norm counted in another's family -> that norm: reported beside it, never its rival
    family: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimAnalysis:
    claim: str  # "C4"
    name: str  # figure / verdict file name
    title: str  # the claim in a few words
    reads: tuple[str, ...]  # experiments whose collected tables it needs
    # draw(tables, out, results_dir=None): the figure at ``out``; ``results_dir`` is the folder
    # whose runs/ hold the runs' own files (None: the figure does without them)
    draw: Callable[..., Path]
    verdict: Callable[[Tables], dict]
    # the runs whose cells decide the verdict (their seeds must be complete for a verdict of
    # record, normexp.analysis.verdict.record); None: every table it reads
    deciding: Callable[[Tables], Tables] | None = None
    # a claim decided per architecture: how (another claim may read its architecture of record)
    per_architecture: "PerArchitecture | None" = None
    quote: Quote | None = None  # the blog's words, quoted above the claim's section
    dashboard: tuple[Grid, ...] = field(default_factory=tuple)  # its W&B report's panel grids
    # a claim whose figure is a table (C11): the same table as markdown rows, for the report
    table: Callable[[Tables], list[str]] | None = None
    # sub-claims about training itself (speed, landscape): they keep their call at a fixed
    # budget (normexp/analysis/verdict/regime.py); every other is about final performance
    about_training: tuple[str, ...] = ()
    score: Score | None = None  # how it scores a norm on its deciding runs (C6, C7)
    reads_from: tuple[str, ...] = ()  # claims (names) whose deciding experiments it reads
    # per sub-claim id, the runs that decide it where they are not the claim's (C11: each row
    # its source's): each such sub-claim gets the regime and LR-edge call of its own runs
    sub_deciding: Callable[[Tables], dict[str, Tables]] | None = None

    def decided_from(self) -> tuple[str, ...]:
        """The experiments whose runs can decide it: its architectures', else its score's, else
        every one it reads."""
        if self.per_architecture is not None:
            return (self.per_architecture.experiment, self.per_architecture.resnet)
        return (self.score.experiment,) if self.score is not None else self.reads


@dataclass(frozen=True)
class Claim:
    """What every verdict of one claim repeats: its id, its name (the verdict's and figure's file
    name), the published numbers it is compared with and its decision rule."""

    id: str  # "C4"
    name: str
    anchor: str
    rule: str

    @classmethod
    def from_doc(cls, id: str, name: str, anchor: str, doc: str, end: str = "") -> "Claim":  # noqa: A002
        """The rule is the module docstring's text after "Verdict rule." (up to ``end``)."""
        rule = doc.split("Verdict rule.")[1]
        return cls(id, name, anchor, rule.split(end)[0] if end else rule)

    def verdict(
        self, verdict: str, effect: str, measured: dict | None = None, **fields: object
    ) -> dict:
        """A verdict dict of this claim (``fields``: make_verdict's keyword arguments); the
        estimate and its CI from ``measured``, a paired ``difference``, when given."""
        if measured is not None:
            fields.update(estimate=measured["mean"], ci=tuple(measured["ci"]))
        return make_verdict(
            self.id, self.name, verdict, effect, rule=self.rule, anchor=self.anchor, **fields
        )

    def not_run_yet(self, what: str = "") -> dict:
        """The verdict when the runs it needs are not in the store (``what``: which are missing)."""
        return self.verdict("not run yet", what or f"no finished runs of {self.name} in the store")

    def analysis(
        self,
        title: str,
        reads: tuple[str, ...],
        draw: Callable[..., Path],
        verdict: Callable | None = None,
        deciding: Callable[[Tables], Tables] | None = None,
        per_architecture: "PerArchitecture | None" = None,
        quote: Quote | None = None,
        dashboard: tuple[Grid, ...] = (),
        table: Callable[[Tables], list[str]] | None = None,
        about_training: tuple[str, ...] = (),
        score: Score | None = None,
        reads_from: tuple[str, ...] = (),
        sub_deciding: Callable[[Tables], dict[str, Tables]] | None = None,
    ) -> "ClaimAnalysis":
        """The claim's declaration; decided per architecture, its verdict and deciding cells
        are ``per_architecture``'s (the claim writes them for one architecture's tables)."""
        if per_architecture is not None:
            verdict, deciding = per_architecture.verdict, per_architecture.deciding
        assert verdict is not None, f"{self.id}: a verdict, or per_architecture"
        return ClaimAnalysis(
            self.id, self.name, title, reads, draw, verdict, deciding, per_architecture, quote,
            dashboard, table, about_training, score, reads_from, sub_deciding,
        )  # fmt: skip


@dataclass(frozen=True)
class ReportSection:
    """A report section that reads experiments' tables (runs of record) but decides no claim."""

    name: str  # its anchor in the report
    title: str
    reads: tuple[str, ...]  # experiments whose collected tables it needs
    draw: Callable[[Tables, Path], list[Path]]  # draw(tables, figures_dir): its figures
    markdown: Callable[[Tables], list[str]]  # its text (markdown lines), figures aside
    # families(tables, claim id): a line for that claim's verdict ("" for none), under ``part``
    families: Callable[[Tables, str], str] | None = None
    part: str = "families"  # the verdict's key for that line (the report's PARTS name it)
    # markdown(tables, results_dir=...) also reads what the sweeps wrote beside the runs
    reads_store: bool = False
