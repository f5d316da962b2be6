"""`cnnkit report` and `cnnkit show`: pictures of a trained model and of a spec's data (need cnnkit[plots]).

The work is done in cnnkit.report (which imports matplotlib); these commands parse and print. The
report `cnnkit run` writes into its run folder comes from cnnkit.training.session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import DataDirOption, DataOption, DataSetOption, ForceOption, NoTtaOption, SetOption, command


@command()
def report(
    source: Annotated[Path, typer.Argument(metavar="BUNDLE_OR_RUN", help="A bundle, or a run folder (the bundle the run delivered).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs and index.html (default: <bundle>-report/, or <run>/report/).")] = None,
    data: DataOption = None,
    data_dir: DataDirOption = None,
    set_: DataSetOption = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use the first N test images.")] = None,
    no_tta: NoTtaOption = False,
    force: ForceOption = False,
):
    """Pictures of a trained model: training curves, confusion matrix, surest mistakes, and an index.html (needs the plots extra: pip install "cnnkit\\[plots]")."""
    from ..bundle.atomic import check_target
    from ..data import load_test_set
    from ..report import CONFUSION, CURVES, INDEX, WORST, check_picture, is_report_page, report_source, require_plots, write_report

    require_plots()
    model, described, default_out = report_source(source)
    target = out or default_out
    if target.is_dir():  # before the data is read: the files there must be an earlier report's, or --force
        for name in (CURVES, CONFUSION, WORST):
            check_picture(target / name, force)
        check_target(target / INDEX, force=force, recognise=is_report_page, what="cnnkit report page")
    test = load_test_set(model.spec.data, model.input_shape, data_dir, limit, test_data=data, overrides=set_, classes=model.classes)
    written = write_report(model, test.test_images, test.test_labels, target, described, force=force, tta=not no_tta)
    typer.echo(f"wrote {', '.join(p.name for p in written.values())} in {written['index'].parent}")


@command()
def show(
    spec: Path,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="PNG to write (default: <spec name>-samples.png).")] = None,
    count: Annotated[int, typer.Option(min=1, max=100, help="How many training images.")] = 9,
    set_: SetOption = None,
    force: ForceOption = False,
):
    """A grid of the first training images with their class names: the first look at the data (needs the plots extra: pip install "cnnkit\\[plots]")."""
    import math

    from ..data import load_dataset
    from ..report import check_picture, require_plots, write_samples
    from ..spec import load_spec

    require_plots()
    model_spec = load_spec(spec, set_ or [])
    target = out or f"{Path(model_spec.name).name or 'model'}-samples.png"
    if not Path(target).is_dir():  # before the data is read; write_samples names a folder itself
        target = check_picture(target, force)
    data = load_dataset(model_spec.data.model_copy(update={"train_limit": count, "test_limit": 1}), tuple(model_spec.input.shape))
    columns = math.ceil(math.sqrt(len(data.train_labels)))
    write_samples(data.train_images, data.train_labels, list(data.classes), target,
                  f"{model_spec.name}: {len(data.train_labels)} training images", columns=columns, force=force)
    typer.echo(f"wrote {target}")
