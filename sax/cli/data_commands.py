"""saxutil's data commands: lm.generate, lm.score, lm.embed, lm.gradient and vm.classify,
vm.embed, vm.detect, vm.generate, each a call on a model's replicas through `sax.client.Model`
(``lm.generate`` without ``--stream`` through `sax.client.direct`, which needs no event loop)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sax.cli.args import (
    ExtraOpt,
    ImageArg,
    JsonOpt,
    ModelIdArg,
    extra_arg,
    model_id_arg,
    read_input,
    settings,
    text_arg,
)
from sax.cli.render import (
    echo_json,
    echo_result,
    echo_table,
    fail,
    failing,
    floats,
    format_float,
    usage,
)

if TYPE_CHECKING:
    from sax.client import Model
    from sax.client.direct import DirectModel

commands = typer.Typer()

T = TypeVar("T")


def open_model(ctx: typer.Context, model_id: str) -> Model:
    """The client of `model_id` with ``--sax_root`` and ``--sax_timeout``; exits 1 on failure."""
    from sax.client import Model

    s = settings(ctx)
    with failing("Failed to open model"):
        return Model(model_id_arg(model_id), sax_root=s.root(), timeout=s.timeout_s)


def open_direct_model(ctx: typer.Context, model_id: str) -> DirectModel:
    """`open_model`'s model as a one-shot client (`sax.client.direct`): one blocking call, no
    event loop, the reply's JSON to decode."""
    from sax.client.direct import DirectModel

    s = settings(ctx)
    with failing("Failed to open model"):
        return DirectModel(model_id_arg(model_id), sax_root=s.root(), timeout=s.timeout_s)


def call_model(ctx: typer.Context, model_id: str, what: str, call: Callable[[Model], T]) -> T:
    """`call` on the opened model; a `SaxError` exits 1 as ``Error: <what>: <CODE>: <message>``."""
    model = open_model(ctx, model_id)
    with failing(what):
        return call(model)


def call_on_image(
    ctx: typer.Context,
    model_id: str,
    image: str,
    extra: str,
    what: str,
    call: Callable[[Model, bytes, dict[str, Any]], T],
) -> T:
    """`call(model, image bytes, extra inputs)` with `image` read from its file (stdin for
    ``-``); a failure exits 1 as ``Error: <what> (<image>): <CODE>: <message>``."""
    inputs = extra_arg(extra)
    data = read_input(image)
    return call_model(ctx, model_id, f"{what} ({image})", lambda m: call(m, data, inputs))


@commands.command("lm.generate")
def lm_generate(
    ctx: typer.Context,
    model_id: ModelIdArg,
    query: Annotated[str, typer.Argument(help="the prompt, or - to read stdin")],
    stream: Annotated[bool, typer.Option("--stream", help="stream responses")] = False,
    extra: ExtraOpt = "",
    n: Annotated[
        int, typer.Option("-n", help="maximum number of generated texts to output or zero for all")
    ] = 0,
    terse: Annotated[
        bool,
        typer.Option(
            "--terse", help="print generated texts one line per result, descending by score"
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate a text against a given model."""
    inputs = extra_arg(extra)
    text = text_arg(query)
    if stream:
        model = open_model(ctx, model_id)
        if terse:
            fail("Terse output incompatible with streaming (-stream).")
        if n > 0:
            fail("Max outputs (-n) incompatible with streaming (-stream).")
        stream_generate(model, text, inputs, as_json)
        return
    one_shot = open_direct_model(ctx, model_id)
    with failing("Failed to generate query"):
        reply = one_shot.generate(text, inputs)
    if as_json:
        from sax.schemas import GenerateResponse

        samples = GenerateResponse.model_validate_json(reply).samples
        echo_json({"samples": [x.model_dump(mode="json") for x in samples]})
        return
    scored = [(str(x["text"]), float(x["score"])) for x in json.loads(reply)["samples"]]
    if terse:
        ranked = sorted(scored, key=lambda x: x[1], reverse=True)
        for sample_text, _ in ranked[: n or None]:
            typer.echo(sample_text)
        return
    rows = [[t, format_float(score)] for t, score in scored]
    echo_table(["generate", "Score"], rows[: n or None])


def stream_generate(model: Model, text: str, extra: dict[str, Any], as_json: bool) -> None:
    """Prints sample 0 as it grows (appending deltas; a rewrite starts a new line), the other
    samples at the end, then the final scores."""
    out = sys.stdout
    shown = ""
    with failing("Command failed"):
        stream = model.lm.generate_stream(text, extra)
        for chunk in stream:
            if as_json:
                out.write(chunk.model_dump_json() + "\n")
            elif stream.texts:
                current = stream.texts[0]
                out.write(current[len(shown) :] if current.startswith(shown) else "\n" + current)
                shown = current
            out.flush()
    samples = stream.samples or []
    if as_json:
        out.write(json.dumps({"samples": [x.model_dump(mode="json") for x in samples]}) + "\n")
        return
    out.write("\n")
    for i, sample in enumerate(samples[1:], start=1):
        out.write(f"[{i}] {sample.text}\n")
    out.write("Scores: " + ", ".join(format_float(x.score) for x in samples) + "\n")


@commands.command("lm.score")
def lm_score(
    ctx: typer.Context,
    model_id: ModelIdArg,
    prefix: Annotated[str, typer.Argument(help="the prefix")],
    suffixes: Annotated[list[str], typer.Argument(help="one or more suffixes")],
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Score a prefix and suffix against a given model."""
    inputs = extra_arg(extra)
    scores = call_model(
        ctx,
        model_id,
        "Failed to score prefix/suffix",
        lambda m: m.lm.score(prefix, suffixes, inputs),
    )
    echo_result(
        as_json,
        {"scores": scores},
        ["Suffix", "Score"],
        [[s, format_float(v)] for s, v in zip(suffixes, scores, strict=False)],
    )


@commands.command("lm.embed")
def lm_embed(
    ctx: typer.Context,
    model_id: ModelIdArg,
    text: Annotated[str, typer.Argument(help="the text, or - to read stdin")],
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Embed a text against a given model."""
    inputs = extra_arg(extra)
    body = text_arg(text)
    embedding = call_model(
        ctx, model_id, f"Failed to embed text ({body})", lambda m: m.lm.embed(body, inputs)
    )
    echo_result(
        as_json, {"embedding": embedding}, ["Text", "Embedding"], [[body, floats(embedding)]]
    )


@commands.command("lm.gradient")
def lm_gradient(
    ctx: typer.Context,
    model_id: ModelIdArg,
    prefix: Annotated[str, typer.Argument(help="the prefix")],
    suffix: Annotated[str, typer.Argument(help="the suffix")],
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Generate gradient of a pair of prefix and suffix against a given model."""
    inputs = extra_arg(extra)
    result = call_model(
        ctx,
        model_id,
        "Failed to get the gradient of prefix/suffix",
        lambda m: m.lm.gradient(prefix, suffix, inputs),
    )
    names = sorted(result.gradients)
    echo_result(
        as_json,
        result.model_dump(mode="json"),
        ["Score", *names],
        [[floats(result.score), *(floats(result.gradients[k].values, 8) for k in names)]],
    )


@commands.command("vm.classify")
def vm_classify(
    ctx: typer.Context,
    model_id: ModelIdArg,
    image: ImageArg,
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Classify an image against a given model."""
    results = call_on_image(
        ctx,
        model_id,
        image,
        extra,
        "Failed to classify image",
        lambda m, data, inputs: m.vm.classify(data, inputs),
    )
    echo_result(
        as_json,
        {"texts": [{"text": t, "score": v} for t, v in results]},
        ["Text", "Score"],
        [[t, format_float(v)] for t, v in results],
    )


@commands.command("vm.embed")
def vm_embed(
    ctx: typer.Context,
    model_id: ModelIdArg,
    image: ImageArg,
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Embed an image (as byte array) against a given model."""
    embedding = call_on_image(
        ctx,
        model_id,
        image,
        extra,
        "Failed to embed image",
        lambda m, data, inputs: m.vm.embed(data, inputs),
    )
    name = "stdin" if image == "-" else image
    echo_result(
        as_json, {"embedding": embedding}, ["Image", "Embedding"], [[name, floats(embedding)]]
    )


@commands.command("vm.detect")
def vm_detect(
    ctx: typer.Context,
    model_id: ModelIdArg,
    image: ImageArg,
    text: Annotated[
        list[str] | None,
        typer.Option("--text", help="an open-set concept (repeatable; models that take text)"),
    ] = None,
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Detect objects in an image: boxes (centre, size in pixels), labels and scores."""
    boxes = call_on_image(
        ctx,
        model_id,
        image,
        extra,
        "Failed to detect objects in image",
        lambda m, data, inputs: m.vm.detect(data, text or [], inputs),
    )
    echo_result(
        as_json,
        {"bounding_boxes": [b.model_dump() for b in boxes]},
        ["Text", "Score", "Cx", "Cy", "W", "H"],
        [[b.text, *(format_float(v) for v in (b.score, b.cx, b.cy, b.w, b.h))] for b in boxes],
    )


@commands.command("vm.generate")
def vm_generate(
    ctx: typer.Context,
    model_id: ModelIdArg,
    text: Annotated[str, typer.Argument(help="the prompt")],
    output: Annotated[
        str | None,
        typer.Argument(help="output directory, or - for raw bytes on stdout (or use --out)"),
    ] = None,
    out: Annotated[str | None, typer.Option("--out", help="output directory")] = None,
    extra: ExtraOpt = "",
) -> None:
    """Generate list of images and scores for the input text; writes 0001.PNG, ... to a dir."""
    if (output is None) == (out is None):
        usage("vm.generate takes an output directory: as the third argument or --out DIR")
    target = str(out if out is not None else output)
    inputs = extra_arg(extra)
    images = call_model(
        ctx,
        model_id,
        f"Failed to generate images for ({text})",
        lambda m: m.vm.generate(text, inputs),
    )
    if target == "-":
        for data, _ in images:
            sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    paths = [Path(target) / f"{i:04d}.PNG" for i in range(1, len(images) + 1)]
    try:
        Path(target).mkdir(mode=0o750, parents=True, exist_ok=True)
        for path, (data, _) in zip(paths, images, strict=True):
            path.write_bytes(data)
            path.chmod(0o640)
    except OSError as exc:
        fail(f"Failed to save generated images for ({text}) to ({target}) due to [{exc}].")
    echo_table(
        ["Image", "Score"],
        [[str(p), format_float(v)] for p, (_, v) in zip(paths, images, strict=True)],
    )
