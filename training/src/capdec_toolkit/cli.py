"""`capdec-toolkit`: export, train, distill, reference, fixture, metric-goldens, demo, realsize, bench, api-clients,
api-bench."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

# Each command imports what it runs when it runs: torch, open_clip, transformers and onnxruntime take seconds to
# import, and `--help` or a mistyped option must not wait for them (training/tests/test_cli.py).
from .errors import UserError

if TYPE_CHECKING:
    from .bench.benchmark import BenchSettings
    from .demo.demo import DemoOptions

USER_ERRORS = (UserError, FileNotFoundError)
T = TypeVar("T")


def _sample_photographs() -> list[Path]:
    try:
        import skimage
    except ImportError:
        return []
    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")]


def cmd_export(args: argparse.Namespace) -> None:
    from .export.export import ExportOptions, drift_report, export_bundle, format_drift, write_report
    from .models.checkpoint import load_checkpoint
    from .models.clip_models import load_clip

    clip = load_clip(args.clip)
    model = load_checkpoint(args.checkpoint, args.gpt_heads, args.mapper_heads)
    name = args.name or args.out.name
    description = args.description or f"CLIP {args.clip} + CapDec checkpoint {args.checkpoint.name}"
    precisions = tuple(args.precisions.split(","))
    token_ids = None
    if args.vocabulary:
        from .export.vocabulary import corpus_token_ids
        from .reference.tokenizer import END_OF_TEXT_ID, PERIOD_ID

        token_ids = tuple(corpus_token_ids(args.vocabulary, [END_OF_TEXT_ID, PERIOD_ID]))
        print(f"caption vocabulary: {len(token_ids)} GPT-2 tokens from {args.vocabulary}")
    options = ExportOptions(name, description, args.max_tokens, args.beam, precisions, token_ids)
    bundle = export_bundle(clip, model, args.out, options)
    print(f"wrote bundle {args.out}")
    images = args.images or _sample_photographs()
    if "int8" in precisions and "fp32" in precisions and images:
        report = drift_report(bundle, images)
        write_report(report, args.out / "export-report.json")
        print(format_drift(report))


@contextmanager
def _progress(captions: list[str], epochs: int, batch_size: int, what: str, shown: bool = True
              ) -> Iterator[Callable[..., None]]:
    """A progress bar over every caption of every epoch: captions a second, time left, and the step's losses.
    Yields `advance(step, **losses)`, called after each step. Under torchrun only the first process shows it."""
    from tqdm import tqdm

    with tqdm(total=epochs * len(captions), unit="caption", desc=what, dynamic_ncols=True, disable=not shown) as bar:

        def advance(step: int, **losses: float) -> None:
            bar.update(min(batch_size, len(captions) - step * batch_size))
            bar.set_postfix({name: f"{value:.4f}" for name, value in losses.items()}, refresh=False)

        yield advance


def cmd_train(args: argparse.Namespace) -> None:
    from .models.checkpoint import CapDecConfig, CapDecModel, load_checkpoint, save_checkpoint
    from .models.clip_models import load_clip
    from .models.gpt2 import Gpt2Config
    from .models.mapper import MapperConfig
    from .models.distributed import joined
    from .models.train import TrainOptions, load_pretrained_gpt2, read_corpus, train

    clip = load_clip(args.clip)
    options = TrainOptions(
        noise_variance=args.noise_variance,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        freeze_gpt=args.freeze_gpt,
        seed=args.seed,
        device=args.device,
    )
    captions = read_corpus(args.corpus, options.max_caption_tokens)
    if args.init:
        model = load_checkpoint(args.init)
    else:
        gpt = load_pretrained_gpt2(args.gpt) if args.gpt else None
        gpt_config = gpt.config if gpt else Gpt2Config(args.gpt_layers, args.gpt_heads, args.gpt_width)
        mapper = MapperConfig(
            args.mapper, clip.embedding_size, gpt_config.width, args.prefix_length,
            clip_length=args.prefix_length, layers=args.mapper_layers, heads=args.mapper_heads,
        )
        model = CapDecModel(CapDecConfig(mapper, gpt_config))
        if gpt:
            model.gpt = gpt

    with joined(options.device) as world:
        options = replace(options, device=world.device(options.device))
        with _progress(captions, options.epochs, options.batch_size, "train", world.is_main) as advance:
            train(clip, model, captions, options, lambda epoch, step, loss: advance(step, loss=loss), world)
        if world.is_main:
            save_checkpoint(model, args.out)
            print(f"wrote {args.out}" + (f" (trained by {world.size} processes)" if world.size > 1 else ""))


def cmd_distill(args: argparse.Namespace) -> None:
    from .models.checkpoint import load_checkpoint, save_checkpoint
    from .models.clip_models import load_clip
    from .models.distill import DistillOptions, distill, make_student
    from .models.distributed import joined
    from .models.train import TrainOptions, read_corpus

    options = DistillOptions(
        layers=args.layers, width=args.width, heads=args.heads, init=args.init, mapper=args.mapper,
        temperature=args.temperature, soft_weight=args.soft_weight,
        training=TrainOptions(noise_variance=args.noise_variance, epochs=args.epochs, batch_size=args.batch_size,
                              learning_rate=args.lr, seed=args.seed, device=args.device),
    )
    if args.vocabulary:
        from .export.vocabulary import corpus_token_ids
        from .reference.tokenizer import END_OF_TEXT_ID, PERIOD_ID

        options = replace(options, vocabulary=tuple(corpus_token_ids(args.vocabulary, [END_OF_TEXT_ID, PERIOD_ID])))
    teacher = load_checkpoint(args.teacher)
    student = make_student(teacher, options)
    clip = load_clip(args.clip)
    captions = read_corpus(args.corpus, options.training.max_caption_tokens)

    training = options.training
    with joined(training.device) as world:
        options = replace(options, training=replace(training, device=world.device(training.device)))
        with _progress(captions, training.epochs, training.batch_size, "distill", world.is_main) as advance:
            distill(clip, teacher, student, captions, options,
                    lambda epoch, step, loss, kl: advance(step, loss=loss, kl=kl), world)
        if world.is_main:
            save_checkpoint(student, args.out)
            print(f"wrote {args.out}" + (f" (trained by {world.size} processes)" if world.size > 1 else ""))


def cmd_reference(args: argparse.Namespace) -> None:
    from .reference.bundle import Bundle
    from .reference.reference import goldens

    bundle = Bundle.open(args.bundle)
    data = goldens(bundle, args.images, args.out.parent)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    for precision, results in data["precisions"].items():
        for image, result in results.items():
            print(f"{precision} {image}: {result['beam']['text']}")


def cmd_fixture(args: argparse.Namespace) -> None:
    from .parity.fixture import build_fixture

    print(build_fixture(args.out, args.goldens, args.images, args.vocab_out, args.vocab_goldens))


def cmd_metric_goldens(args: argparse.Namespace) -> None:
    from .parity.metric_goldens import metric_goldens

    data = metric_goldens()
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(data['cases'])} cases)")


def _given(value: T | None, default: T) -> T:
    return default if value is None else value


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(value) for value in text.split(","))


def demo_options(args: argparse.Namespace) -> DemoOptions:
    """The demo recipe, `DemoOptions`' defaults, with each option the command line gives in its place. The parser
    leaves these options None rather than repeating the recipe's values, which it cannot import without torch."""
    from .bench.benchmark import BenchSettings
    from .demo.demo import DemoOptions

    recipe = DemoOptions(out=args.out, work=args.work, docs=args.docs, scenes=args.scenes, examples=args.examples)
    seed = _given(args.seed, recipe.seed)
    training = recipe.decoder.training
    return replace(
        recipe,
        seed=seed,
        train_scenes=_given(args.train_scenes, recipe.train_scenes),
        decoder_captions=_given(args.decoder_captions, recipe.decoder_captions),
        eval_scenes=_given(args.eval_scenes, recipe.eval_scenes),
        variances=_given(args.variances, recipe.variances),
        capdec=args.capdec,
        clip=replace(recipe.clip, steps=_given(args.clip_steps, recipe.clip.steps), seed=seed),
        decoder=replace(
            recipe.decoder,
            mapper=_given(args.mapper, recipe.decoder.mapper),
            training=replace(training, epochs=_given(args.decoder_epochs, training.epochs)),
        ),
    )


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo.demo import run_demo
    from .demo.demo_report import ablation_table

    report = run_demo(demo_options(args))
    print(ablation_table(report.ablation))
    print(f"wrote {args.out} ({report.bundle_bytes / 1e6:.1f} MB), {args.docs}, {args.scenes}, {args.examples}")


def cmd_realsize(args: argparse.Namespace) -> None:
    from .bench.realsize import CONFIGS, ensure_bundle

    for name in args.names or list(CONFIGS):
        bundle = ensure_bundle(name, args.folder, args.checksums)
        print(f"{bundle.folder}: checksum matches models/real-size.sha256")


def _bench_settings(args: argparse.Namespace) -> BenchSettings:
    """What `bench` and `kernel-bench` share: the release binary, and how many runs of how long a caption."""
    from .bench.benchmark import BenchSettings

    if not args.binary.is_file():
        raise FileNotFoundError(f"{args.binary}: no capdec binary (cargo build --release)")
    threads = tuple(int(count) for count in args.threads.split(","))
    return BenchSettings(args.runs, args.warmup, args.tokens, 5, threads)


def cmd_bench(args: argparse.Namespace) -> None:
    from .bench.benchmark import benchmark_bundle, format_result
    from .bench.realsize import CONFIGS, ensure_bundle

    settings = _bench_settings(args)
    photos = sorted(path for path in args.photos.iterdir() if path.suffix in (".png", ".jpg"))
    results = []
    for name in args.names or list(CONFIGS):
        bundle = ensure_bundle(name, args.folder, args.checksums)
        result = benchmark_bundle(args.binary, bundle, args.image, photos, settings)
        print(format_result(result, settings), flush=True)
        results.append(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")


def cmd_kernel_bench(args: argparse.Namespace) -> None:
    from .bench.benchmark import format_kernels, kernels_here, kernels_side_by_side
    from .bench.realsize import ensure_bundle

    settings = _bench_settings(args)
    kernels = args.kernels.split(",") if args.kernels else ["tract", *kernels_here()]
    bundle = ensure_bundle(args.name, args.folder, args.checksums)
    result = kernels_side_by_side(args.binary, bundle, args.image, kernels, settings)
    print(format_kernels(result, settings), flush=True)


def cmd_api_clients(args: argparse.Namespace) -> None:
    from .parity.api_clients import run

    if not args.image.is_file():
        raise FileNotFoundError(f"{args.image}: no such picture")
    print(json.dumps(run(args.url.rstrip("/"), args.image, args.token)))


def cmd_api_bench(args: argparse.Namespace) -> None:
    from .bench.api_load import run, table

    if not args.image.is_file():
        raise FileNotFoundError(f"{args.image}: no such picture")
    counts = [int(count) for count in args.clients.split(",")]
    results = [run(args.url.rstrip("/"), args.image, count, args.seconds) for count in counts]
    print(table(args.label, results), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="capdec-toolkit", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="CLIP + CapDec checkpoint -> model bundle (fp32 + int8)")
    export.add_argument("--clip", required=True, help="Hugging Face name or folder, OpenCLIP folder, or RN50x4")
    export.add_argument("--checkpoint", required=True, type=Path, help="CapDec/ClipCap state dict (.pt)")
    export.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    export.add_argument("--name")
    export.add_argument("--description")
    export.add_argument("--gpt-heads", type=int, help="default: the checkpoint's sidecar, else width / 64")
    export.add_argument("--mapper-heads", type=int, help="default: the checkpoint's sidecar, else 8")
    export.add_argument("--max-tokens", type=int, default=67)
    export.add_argument("--beam", type=int, default=5)
    export.add_argument("--precisions", default="fp32,int8")
    export.add_argument("--images", nargs="*", type=Path, help="images for the int8 drift report")
    export.add_argument("--vocabulary", type=Path, metavar="CORPUS",
                        help="keep only the GPT-2 tokens these captions use (one a line; bundle format version 2)")
    export.set_defaults(run=cmd_export)

    trainer = commands.add_parser("train", help="CapDec text-only training on a caption corpus")
    trainer.add_argument("--clip", required=True)
    trainer.add_argument("--corpus", required=True, type=Path, help="one caption a line, UTF-8")
    trainer.add_argument("--out", required=True, type=Path, help="checkpoint to write, e.g. coco_prefix-009.pt")
    trainer.add_argument("--init", type=Path, help="continue from this CapDec checkpoint")
    trainer.add_argument("--gpt", help="start GPT-2 from this Hugging Face name or folder (else random)")
    trainer.add_argument("--gpt-layers", type=int, default=12)
    trainer.add_argument("--gpt-heads", type=int, default=12)
    trainer.add_argument("--gpt-width", type=int, default=768)
    trainer.add_argument("--mapper", choices=("mlp", "transformer"), default="transformer")
    trainer.add_argument("--prefix-length", type=int, default=40)
    trainer.add_argument("--mapper-layers", type=int, default=8)
    trainer.add_argument("--mapper-heads", type=int, default=8)
    trainer.add_argument("--noise-variance", type=float, default=0.016)
    trainer.add_argument("--epochs", type=int, default=10)
    trainer.add_argument("--batch-size", type=int, default=40)
    trainer.add_argument("--lr", type=float, default=2e-5)
    trainer.add_argument("--freeze-gpt", action="store_true")
    trainer.add_argument("--seed", type=int, default=0)
    trainer.add_argument("--device", default="cpu", help="cpu or cuda")
    trainer.set_defaults(run=cmd_train)

    distiller = commands.add_parser("distill", help="a smaller decoder from a CapDec checkpoint, on text only")
    distiller.add_argument("--teacher", required=True, type=Path, help="the CapDec checkpoint to learn from")
    distiller.add_argument("--clip", required=True, help="the CLIP the teacher was trained with")
    distiller.add_argument("--corpus", required=True, type=Path, help="one caption a line, UTF-8")
    distiller.add_argument("--out", required=True, type=Path, help="the student's checkpoint (export takes it)")
    distiller.add_argument("--layers", required=True, type=int, help="the student's GPT-2 blocks")
    distiller.add_argument("--width", type=int, help="the student's width (default the teacher's)")
    distiller.add_argument("--heads", type=int, help="the student's heads (default the teacher's, or width / 64)")
    distiller.add_argument("--init", choices=("teacher", "random"), default="teacher",
                           help="start from every other teacher block (teacher) or at random")
    distiller.add_argument("--mapper", choices=("copy", "train"), default="copy",
                           help="keep the teacher's mapper (copy) or train one with the student")
    distiller.add_argument("--temperature", type=float, default=2.0)
    distiller.add_argument("--soft-weight", type=float, default=0.5,
                           help="share of the loss that is the KL divergence to the teacher")
    distiller.add_argument("--vocabulary", type=Path, metavar="CORPUS",
                           help="distil over the GPT-2 tokens these captions use only (far faster; export the "
                           "student with the same --vocabulary)")
    distiller.add_argument("--noise-variance", type=float, default=0.016)
    distiller.add_argument("--epochs", type=int, default=10)
    distiller.add_argument("--batch-size", type=int, default=40)
    distiller.add_argument("--lr", type=float, default=1e-4)
    distiller.add_argument("--seed", type=int, default=0)
    distiller.add_argument("--device", default="cpu", help="cpu or cuda")
    distiller.set_defaults(run=cmd_distill)

    reference = commands.add_parser("reference", help="golden outputs of a bundle through onnxruntime")
    reference.add_argument("bundle", type=Path)
    reference.add_argument("images", nargs="+", type=Path)
    reference.add_argument("--out", required=True, type=Path)
    reference.set_defaults(run=cmd_reference)

    fixture = commands.add_parser("fixture", help="regenerate models/fixture-tiny(-vocab) and their goldens")
    fixture.add_argument("--out", type=Path, default=Path("models/fixture-tiny"))
    fixture.add_argument("--goldens", type=Path, default=Path("tests/data/fixture-goldens.json"))
    fixture.add_argument("--images", type=Path, default=Path("tests/data/images"))
    fixture.add_argument("--vocab-out", type=Path, default=Path("models/fixture-tiny-vocab"),
                         help="the same model with a caption vocabulary (bundle format version 2)")
    fixture.add_argument("--vocab-goldens", type=Path, default=Path("tests/data/fixture-vocab-goldens.json"))
    fixture.set_defaults(run=cmd_fixture)

    goldens = commands.add_parser("metric-goldens", help="write the caption metrics' goldens for the Rust port")
    goldens.add_argument("--out", type=Path, default=Path("tests/data/metric-goldens.json"))
    goldens.set_defaults(run=cmd_metric_goldens)

    demo = commands.add_parser(
        "demo",
        help="train the bundled demo model from scratch and its noise ablation (CPU)",
        description="Options not given take the values of the recipe that made models/demo (docs/demo-model.md).",
    )
    demo.add_argument("--out", type=Path, default=Path("models/demo"), help="the bundle to write")
    demo.add_argument("--work", type=Path, default=Path("/tmp/capdec-demo"), help="CLIP, checkpoints, ablation bundles")
    demo.add_argument("--docs", type=Path, default=Path("docs/demo-model.md"))
    demo.add_argument("--scenes", type=Path, default=Path("tests/data/demo-scenes"), help="held-out test scenes")
    demo.add_argument("--examples", type=Path, default=Path("examples"))
    demo.add_argument("--seed", type=int)
    demo.add_argument("--train-scenes", type=int)
    demo.add_argument("--decoder-captions", type=int, help="size of the decoder's text corpus")
    demo.add_argument("--eval-scenes", type=int)
    demo.add_argument("--clip-steps", type=int)
    demo.add_argument("--decoder-epochs", type=int)
    demo.add_argument("--variances", type=_floats, help="the noise ablation, comma-separated")
    demo.add_argument("--mapper", choices=("mlp", "transformer"))
    demo.add_argument("--capdec", type=Path, help="the capdec binary that times the decoders (default: this "
                      "repository's release build, made first)")
    demo.set_defaults(run=cmd_demo)

    realsize = commands.add_parser("realsize", help="generate and check the real-size random bundles")
    realsize.add_argument("names", nargs="*", help="real-size bundles (default: all)")
    realsize.add_argument("--folder", type=Path, default=Path("models/real-size"))
    realsize.add_argument("--checksums", type=Path, default=Path("models/real-size.sha256"))
    realsize.set_defaults(run=cmd_realsize)

    def timing_arguments(parser: argparse.ArgumentParser, runs: int, warmup: int) -> None:
        parser.add_argument("--binary", type=Path, default=Path("target/release/capdec"))
        parser.add_argument("--image", type=Path, default=Path("tests/data/images/chelsea.png"))
        parser.add_argument("--folder", type=Path, default=Path("models/real-size"))
        parser.add_argument("--checksums", type=Path, default=Path("models/real-size.sha256"))
        parser.add_argument("--runs", type=int, default=runs)
        parser.add_argument("--warmup", type=int, default=warmup)
        parser.add_argument("--tokens", type=int, default=20)
        parser.add_argument("--threads", default="1,2")

    bench = commands.add_parser("bench", help="tract vs onnxruntime vs CapDec-style PyTorch, side by side")
    bench.add_argument("names", nargs="*", help="real-size bundles (default: all)")
    timing_arguments(bench, runs=20, warmup=3)
    bench.add_argument("--photos", type=Path, default=Path("tests/data/images"), help="for int8 vs fp32 agreement")
    bench.add_argument("--json-out", type=Path, help="also write the raw results here")
    bench.set_defaults(run=cmd_bench)

    kernels = commands.add_parser("kernel-bench", help="int8 stages on each of our kernels, tract's and onnxruntime")
    kernels.add_argument("name", nargs="?", default="vitb32-mlp-distilgpt2", help="a real-size bundle")
    kernels.add_argument("--kernels", help="CAPDEC_INT8_KERNEL values, comma-separated (tract: tract's own; "
                                           "default: tract and every one of ours this CPU has)")
    timing_arguments(kernels, runs=10, warmup=2)
    kernels.set_defaults(run=cmd_kernel_bench)

    clients = commands.add_parser(
        "api-clients",
        help="a running daemon's HTTP API through the ollama and openai clients (tests/api.rs)",
    )
    clients.add_argument("--url", required=True, help="the daemon's API, e.g. http://127.0.0.1:11434")
    clients.add_argument("--image", required=True, type=Path, help="the picture to caption")
    clients.add_argument("--token", help="the API's bearer token, where it has one")
    clients.set_defaults(run=cmd_api_clients)

    load = commands.add_parser(
        "api-bench", help="latency and throughput of a running daemon's /api/generate (scripts/api-bench)"
    )
    load.add_argument("--url", required=True, help="the daemon's API, e.g. http://127.0.0.1:11434")
    load.add_argument("--image", type=Path, default=Path("tests/data/images/chelsea.png"))
    load.add_argument("--clients", default="1,4", help="concurrent clients, one run each, comma-separated")
    load.add_argument("--seconds", type=float, default=20.0, help="each run's length")
    load.add_argument("--label", default="daemon", help="the table's heading")
    load.add_argument("--json-out", type=Path, help="also write the raw results here")
    load.set_defaults(run=cmd_api_bench)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
