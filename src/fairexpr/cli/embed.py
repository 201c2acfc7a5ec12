"""`fairexpr embed`: a dataset split's backbone embeddings, computed once into an .npz (the head-level protocol)."""
from __future__ import annotations

import click

from .common import UserError, checkpoint_option, emit, json_option, resolve_checkpoint_arg, tta_option_plain
from .evaluate import exclusion_lines, parse_options


@click.command("embed")
@checkpoint_option("Trained model (run folder, or a packaged model: default / a zoo name; none = the default model). "
                   "Not with --model.")
@click.option("--model", "model_name", help="Instead of a trained model: a registry backbone as pretrained, untrained "
                                            "(e.g. dlib_resnet29 with --pretrained dlib).")
@click.option("--pretrained", help="Weights of --model (a local file, a run folder, or a named source such as dlib).")
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE", help="Keyword of --model (repeatable).")
@click.option("--image-size", type=click.IntRange(min=8), help="Input side of --model (required with it).")
@click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True, help="Input channels of --model.")
@click.option("--data", "spec", required=True, help="Dataset FORMAT:PATH.")
@click.option("--split", default=None, help="Split name (e.g. train, private_test, test).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Adapter option (repeatable).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npz.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--on-bad-file", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@tta_option_plain
@click.option("--no-progress", is_flag=True, help="Hide the decoding and embedding progress bars.")
@json_option
def command(checkpoint, model_name, pretrained, model_options, image_size, channels, spec, split, options, out, batch_size,
            on_bad_file, tta, no_progress, as_json):
    """Embed a dataset split with a model's backbone (its forward_features) into OUT.npz: features, labels, the
    model's own logits (trained models), soft labels where the dataset has them, and what was left out."""
    from ..data.base import FERDataset
    from ..errors import ConfigError
    from ..engine.embed import embed_backbone, embed_checkpoint, save_embeddings

    if model_name is None:
        for flag, v in (("--pretrained", pretrained), ("--model-option", model_options), ("--image-size", image_size)):
            if v:
                raise UserError(f"{flag} is only used with --model")
    elif checkpoint is not None:
        raise UserError("give --checkpoint or --model, not both")
    elif image_size is None:
        raise UserError("--model needs --image-size (the input side the backbone is fed)")
    if not out.endswith(".npz"):
        raise UserError(f"--out {out!r}: the embeddings file must end in .npz")
    opts = parse_options(options)
    if split is None:
        present = sorted({str(s.split) for s in FERDataset.from_spec(spec, None, on_bad_file=on_bad_file, **opts).samples
                          if s.split})
        if len(present) > 1:
            raise ConfigError(f"{spec}: has splits {', '.join(present)}; give one (--split NAME)")
    kw = dict(options=opts, on_bad_file=on_bad_file, progress=not (no_progress or as_json), batch_size=batch_size, tta=tta)
    if model_name is None:
        emb = embed_checkpoint(resolve_checkpoint_arg(checkpoint), spec, split, **kw)
    else:
        emb = embed_backbone(model_name, spec, split, pretrained=pretrained, image_size=image_size, channels=int(channels),
                             model_kwargs=parse_options(model_options), **kw)
    path = save_embeddings(emb, out)
    counts = dict(zip(emb.classes, emb.class_counts().tolist()))
    rep = {"out": str(path), "n": len(emb), "dim": emb.dim, "classes": list(emb.classes), "class_counts": counts,
           "has_logits": emb.logits is not None, "has_soft_labels": emb.soft_labels is not None} | {
        k: emb.meta[k] for k in ("source", "dataset", "split", "tta", "exclusions")}
    human = [f"{spec} [{split or 'all'}]: {len(emb)} faces x {emb.dim} features -> {path}",
             "  per class: " + ", ".join(f"{c} {n}" for c, n in counts.items()),
             *exclusion_lines(emb.meta["exclusions"])]
    emit(rep, as_json, "\n".join(human))
