"""The picture commands of the CLI, `cnnkit report` and `cnnkit show`, and the report `cnnkit run` writes.

Kept apart from cli.py so that file stays a readable size; ``register_report_commands`` adds the
commands to the app with cli.py's error-mapping decorator. The work is done in cnnkit.report.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import CnnkitError


def run_report(model, data, folder: Path, target: Path) -> str | None:
    """After `cnnkit run`: the report into ``folder/report`` when matplotlib is installed; a problem is returned, not raised."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return None
    from .report import write_report

    try:  # the bundle is written: a report that fails is a warning, not a failed run
        write_report(model, data.test_images, data.test_labels, folder / "report", str(target))
    except CnnkitError as exc:
        return f"no report in {folder / 'report'}: {exc}"
    return None


def register_report_commands(command, SetOption, ForceOption) -> None:
    """Add `report` and `show` to the app behind ``command`` (cli.command)."""

    @command()
    def report(
        source: Annotated[Path, typer.Argument(metavar="BUNDLE_OR_RUN", help="A bundle, or a run folder (its last.cnnkit).")],
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs and index.html (default: <bundle>-report/, or <run>/report/).")] = None,
        data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the Fashion-MNIST IDX files (default: the bundle spec's data.dir, else search).")] = None,
        limit: Annotated[Optional[int], typer.Option(min=1, help="Use the first N test images.")] = None,
        force: ForceOption = False,
    ):
        """Pictures of a trained model: training curves, confusion matrix, surest mistakes, and an index.html (needs cnnkit[plots])."""
        from .data import load_fashion_mnist
        from .bundle.atomic import check_target
        from .report import CONFUSION, CURVES, INDEX, WORST, check_picture, is_report_page, report_source, require_plots, write_report

        require_plots()
        model, described, default_out = report_source(source)
        target = out or default_out
        if target.is_dir():  # before the data is read: the files there must be an earlier report's, or --force
            for name in (CURVES, CONFUSION, WORST):
                check_picture(target / name, force)
            check_target(target / INDEX, force=force, recognise=is_report_page, what="cnnkit report page")
        data = load_fashion_mnist(data_dir or model.spec.data.dir, train_limit=1, test_limit=limit)
        written = write_report(model, data.test_images, data.test_labels, target, described, force=force)
        typer.echo(f"wrote {', '.join(p.name for p in written.values())} in {written['index'].parent}")


    @command()
    def show(
        spec: Path,
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default: <spec name>-samples.png).")] = None,
        count: Annotated[int, typer.Option(min=1, max=100, help="How many training images.")] = 9,
        set_: SetOption = None,
        force: ForceOption = False,
    ):
        """A grid of the first training images with their class names: the first look at the data (needs cnnkit[plots])."""
        import math

        from .data import load_fashion_mnist
        from .report import check_picture, require_plots, write_samples
        from .spec import load_spec

        require_plots()
        model_spec = load_spec(spec, set_ or [])
        target = out or Path(f"{Path(model_spec.name).name or 'model'}-samples.png")
        if not target.is_dir():  # before the data is read; write_samples names a folder itself
            check_picture(target, force)
        d = model_spec.data
        data = load_fashion_mnist(d.dir, count, 1)
        columns = math.ceil(math.sqrt(len(data.train_labels)))
        write_samples(data.train_images, data.train_labels, list(data.classes), target,
                      f"{model_spec.name}: {len(data.train_labels)} training images", columns=columns, force=force)
        typer.echo(f"wrote {target}")
