"""The training loop: eps-MSE on CCEdit's denoiser, through accelerate (one CPU to many GPUs), resumable exactly.

Run layout under `output`: `ccedit-run.json` (the run marker, locked while a training runs, `run_folder.py`),
`config.yaml` (the resolved settings), `losses.jsonl` (one line per step), `checkpoints/step-NNNNNN/` (the trained
parts, optimiser, LR schedule, EMA and random states as data files, `checkpoint.py`), and `model/` (the final
trained parts, loadable as the sub-folders of a ccedit model folder), `data/` for the synthetic set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..config_checks import TRAIN_BOUNDS, check_numbers
from ..errors import UserError
from ..io import atomic_path
from ..models.centre import centre_frame
from ..schedulers import DiscreteEpsDenoiser
from .checkpoint import (
    TrainingState,
    check_fits,
    load_checkpoint,
    restore_random_states,
    save_checkpoint,
    select_checkpoint,
)
from .config import TrainConfig
from .data import (
    StreamPositions,
    VideoWindows,
    collate,
    scan_videos,
    step_rng,
    worker_count,
)
from .model import TrainingModels, build_models, check_roles, check_structure
from .run_folder import (
    TRACKER_NAME,
    RunFolder,
    check_run_folder,
    claim_run_folder,
    inputs_inside,
)

logger = logging.getLogger(__name__)

LOSSES = "losses.jsonl"


@dataclass
class TrainResult:
    output: Path
    step: int
    losses: list[float]  # this call's steps
    skipped_videos: int
    trident: object  # the trained network (unwrapped), for inspection


def check_config(config: TrainConfig, resume: bool, overwrite: bool = False) -> Path:
    """Everything that can be checked without loading a model or a video; returns the run folder."""
    if config.output is None:
        raise UserError("no run folder: add output=DIR")
    output = Path(config.output).expanduser()
    check_numbers(config, TRAIN_BOUNDS)
    check_roles(config.model)
    check_structure(config.model)
    t, d, m = config.train, config.data, config.model
    if t.mixed_precision not in ("no", "fp16", "bf16"):
        raise UserError(f"train.mixed_precision must be no, fp16 or bf16, got {t.mixed_precision!r}")
    if d.keyframe_index not in ("centre", "random"):
        raise UserError(f"data.keyframe_index must be centre or random, got {d.keyframe_index!r}")
    if d.height % 8 or d.width % 8:
        raise UserError(f"data.height and data.width must be multiples of 8, got {d.height}x{d.width}")
    if d.videos is None and d.synthetic < 1:
        raise UserError("no training data: set data.videos to a folder of videos (or data.synthetic to a count)")
    if d.videos is not None and Path(d.videos).expanduser().is_dir() and not any(Path(d.videos).expanduser().iterdir()):
        raise UserError(f"data.videos folder {d.videos} is empty: put videos and a captions.csv (`path,caption`) in it")
    if check_run_folder(output, resume, overwrite) == "run" and overwrite:
        inputs = {"data.videos": d.videos, "data.captions": d.captions, "data.cache_dir": d.cache_dir,
                  "model.temporal": m.temporal, "model.appearance": m.appearance}
        inside = inputs_inside(inputs, output)
        if inside:
            raise UserError(f"{inside} lies in the run {output}, which --overwrite removes: move it out first")
    return output


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train the learnable parts chosen by `config.model.trainable`; see the module docstring for what is written.

    A new run needs a new or empty `output` folder; a folder holding a run is continued with `resume` (from its
    newest intact checkpoint) or started over with `overwrite`.
    """
    from accelerate import Accelerator

    # 1. Checks that need nothing loaded, then the accelerator (one per process under `accelerate launch`).
    output = check_config(config, resume, overwrite)
    accelerator = Accelerator(
        # Without CUDA, say so: only then does accelerate join processes launched by torchrun over gloo.
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.train.mixed_precision,
        gradient_accumulation_steps=config.train.gradient_accumulation_steps,
        log_with="tensorboard" if _has_tensorboard() else None, project_dir=str(output),
    )
    run, checkpoint = _claim_run(accelerator, output, config, resume, overwrite)
    try:
        return _train(accelerator, config, output, checkpoint)
    finally:
        if run is not None:
            run.release()


def _claim_run(accelerator, output: Path, config: TrainConfig, resume: bool,
               overwrite: bool) -> tuple[RunFolder | None, Path | None]:
    """The main process locks the run folder (clearing it with `overwrite`) and picks the checkpoint to resume
    from; every process gets that checkpoint, or raises the main process's refusal."""
    from accelerate.utils import broadcast_object_list

    run, outcome = None, {}
    if accelerator.is_main_process:
        try:
            run = claim_run_folder(output, resume, overwrite)
            if resume:
                folder, record = select_checkpoint(output)
                check_fits(folder, record, check_roles(config.model), config.train.use_ema, config.train.max_steps)
                outcome = {"checkpoint": str(folder)}
        except (UserError, OSError) as error:
            if run is not None:
                run.release()
            outcome = {"error": str(error) if isinstance(error, UserError) else
                       f"cannot prepare the run folder {output}: {error.strerror or error}; choose another output"}
    outcome = broadcast_object_list([outcome])[0]
    if "error" in outcome:
        raise UserError(outcome["error"])
    return run, Path(outcome["checkpoint"]) if "checkpoint" in outcome else None


def _train(accelerator, config: TrainConfig, output: Path, checkpoint: Path | None) -> TrainResult:
    from accelerate.utils import set_seed

    t = config.train
    roles = check_roles(config.model)
    set_seed(t.seed)

    # 2. Data: the synthetic set (written once, by the main process), then every listed video checked.
    report = _prepare_data(accelerator, config, output)

    # 3. Networks: frozen public parts, learnable parts by role; the optimiser, its schedule and the EMA.
    models, params = _prepare_networks(accelerator, config, roles)
    optimizer, lr_scheduler, ema = _optimisation(accelerator, t, params)
    trident, optimizer = accelerator.prepare(models.trident, optimizer)
    state = TrainingState(accelerator, trident, optimizer, lr_scheduler, ema, roles)

    # 4. Resume: weights, optimiser, LR schedule and EMA now; the data position follows from the step.
    step = 0
    if checkpoint is not None:
        load_checkpoint(state, checkpoint)
        step = int(checkpoint.name.split("-")[1])
        logger.info("resumed from %s at step %d", checkpoint, step)
    if accelerator.is_main_process:
        _prepare_run_folder(output, config, step)
    if accelerator.log_with:
        accelerator.init_trackers(TRACKER_NAME)
    batches = _batches(accelerator, config, report, step)  # draws the loader's seed: before the states are restored
    if checkpoint is not None:
        # Last, so that the first step draws (dropout, anything random in the networks) what it drew before.
        restore_random_states(checkpoint, accelerator.process_index)

    # 5. The loop: one optimisation step per `gradient_accumulation_steps` batches.
    denoiser = DiscreteEpsDenoiser()
    losses: list[float] = []
    skipped = 0
    from tqdm.auto import tqdm

    progress = tqdm(total=t.max_steps, initial=step, desc="training", disable=not accelerator.is_main_process)
    trident.train()
    while step < t.max_steps:
        step_loss = torch.zeros((), device=accelerator.device)
        for _ in range(t.gradient_accumulation_steps):
            batch = next(batches)
            skipped += batch["skipped"]
            with accelerator.accumulate(trident):
                loss = training_loss(trident, models, batch, denoiser, config, step, accelerator.device)
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, t.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach() / t.gradient_accumulation_steps
        lr_scheduler.step()
        if ema is not None:
            ema.step(params)
        step += 1
        losses.append(_record_step(accelerator, output, step, step_loss, lr_scheduler.get_last_lr()[0], progress))
        _after_step(state, models, report, config, output, step)
    progress.close()

    # 6. The trained parts, EMA weights when kept, in the layout the editing pipeline loads.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_model(accelerator.unwrap_model(trident), ema, params, roles, output)
    accelerator.end_training()
    return TrainResult(output, step, losses, report.skipped + skipped, accelerator.unwrap_model(trident))


def _prepare_data(accelerator, config: TrainConfig, output: Path):
    """The training videos, checked (`scan_videos`); with `data.synthetic` and no videos, a synthetic set written
    into the run folder first, by the main process while the others wait."""
    t, d = config.train, config.data
    if d.synthetic > 0 and d.videos is None:
        d.videos = str(output / "data")
        if accelerator.is_main_process:
            from .synthetic import build_synthetic_set

            build_synthetic_set(d.videos, d.synthetic, num_frames=max(3 * d.num_frames, 24),
                                size=max(d.height, d.width, 64), fps=d.fps or 8.0, seed=t.seed)
        accelerator.wait_for_everyone()
    return scan_videos(d)


def _prepare_networks(accelerator, config: TrainConfig, roles) -> tuple[TrainingModels, list]:
    """The networks on the accelerator, the frozen ones in the mixed-precision dtype (float32 off CUDA), and the
    parameters the roles train."""
    t = config.train
    models = build_models(config.model)
    trident = models.trident
    params = trident.set_trainable(roles)
    if t.gradient_checkpointing:
        trident.main.enable_gradient_checkpointing()
    frozen_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(t.mixed_precision, torch.float32)
    if accelerator.device.type != "cuda":
        frozen_dtype = torch.float32  # half precision saves nothing worth its error on a CPU
    _cast_frozen(models, frozen_dtype, accelerator.device)
    trident.to(accelerator.device)
    return models, params


def _optimisation(accelerator, t, params: list):
    """AdamW over `params`, its learning-rate schedule and, with `train.use_ema`, the EMA of the parameters."""
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
                                  weight_decay=t.adam_weight_decay, eps=t.adam_epsilon)
    from diffusers.optimization import get_scheduler

    # Stepped here once per optimisation step, not through accelerate (which steps it once per process).
    lr_scheduler = get_scheduler(t.lr_scheduler, optimizer, num_warmup_steps=t.lr_warmup_steps,
                                 num_training_steps=t.max_steps)
    ema = None
    if t.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=t.ema_decay)
        ema.to(accelerator.device)
    return optimizer, lr_scheduler, ema


def _batches(accelerator, config: TrainConfig, report, step: int):
    """This process's batches from optimisation step `step` on: the sample stream resumes where that step left it."""
    t, d = config.train, config.data
    samples_per_step = t.batch_size * accelerator.num_processes * t.gradient_accumulation_steps
    sampler = StreamPositions(t.batch_size, accelerator.process_index, accelerator.num_processes,
                              start=step * samples_per_step)
    annotator, cache = _structure_source(d)
    dataset = VideoWindows(report.entries, d, t.seed, annotator, cache)
    workers = worker_count(d.num_workers)
    loader = torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, sampler=sampler, collate_fn=collate,
                                         num_workers=workers, persistent_workers=workers > 0)
    return iter(loader)  # draws the loader's seed from the global generator


def _record_step(accelerator, output: Path, step: int, step_loss: torch.Tensor, lr: float, progress) -> float:
    """The step's loss averaged over the processes, appended to the losses file, logged and shown; returned."""
    mean_loss = accelerator.reduce(step_loss, reduction="mean").item()
    if accelerator.is_main_process:
        with (output / LOSSES).open("a") as f:
            f.write(json.dumps({"step": step, "loss": mean_loss, "lr": lr}) + "\n")
    if accelerator.log_with:
        accelerator.log({"loss": mean_loss, "lr": lr}, step=step)
    progress.update(1)
    progress.set_postfix(loss=f"{mean_loss:.4f}")
    return mean_loss


def _after_step(state: TrainingState, models: TrainingModels, report, config: TrainConfig, output: Path,
                step: int) -> None:
    """A sample every `train.sample_every` steps, then a checkpoint every `train.checkpoint_every` and at the end."""
    t, accelerator = config.train, state.accelerator
    if t.sample_every > 0 and step % t.sample_every == 0 and accelerator.is_main_process:
        from .samples import write_sample

        # Before the checkpoint: whatever the sample draws is then behind the random states it saves.
        with torch.no_grad():
            write_sample(models, accelerator.unwrap_model(state.trident), report.entries[0], config, output, step,
                         accelerator.device)
    if step % t.checkpoint_every == 0 or step == t.max_steps:
        save_checkpoint(state, output, step, t.keep_checkpoints)


def _save_model(final, ema, params: list, roles, output: Path) -> None:
    """The trained parts of `final` into `output/model`, with the EMA weights when kept (the live ones restored
    after)."""
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    with atomic_path(output / "model", is_dir=True) as folder:
        final.save_trained(folder, roles)
    if ema is not None:
        ema.restore(params)


def training_loss(trident, models: TrainingModels, batch: dict, denoiser: DiscreteEpsDenoiser,
                  config: TrainConfig, step: int, device: torch.device) -> torch.Tensor:
    r"""eps-MSE of one batch, equal to CCEdit's sigma^-2-weighted denoising loss (see `schedulers/denoiser.py`).

    Each sample's random draws come from its own seed (see `data.py`), in a fixed order: the VAE's posterior
    sample, the timestep, the noise, the offset noise (one value per channel and frame, added to every pixel),
    text dropout (the empty prompt) and structure dropout (a blank map).
    """
    t, d = config.train, config.data
    pixels = batch["pixels"].to(device)  # (b, 3, f, H, W) in [-1, 1]
    b, _, f, height, width = pixels.shape
    latent_shape = (f, models.vae.config.latent_channels, height // 8, width // 8)

    draws = []
    for seed in batch["seeds"]:
        g = torch.Generator().manual_seed(seed)
        posterior = torch.randn(latent_shape, generator=g)
        timestep = torch.randint(0, denoiser.num_train_timesteps, (1,), generator=g)
        noise = torch.randn(latent_shape[1], f, *latent_shape[2:], generator=g)
        offset = torch.randn(latent_shape[1], f, 1, 1, generator=g)
        keep_text, keep_structure = (torch.rand(2, generator=g) >= torch.tensor([t.text_dropout, t.structure_dropout])).tolist()
        draws.append((posterior, timestep, noise + t.offset_noise * offset, keep_text, keep_structure))

    with torch.no_grad():
        # 1. Clean latents: (b f) 3 H W -> (b f) 4 h w -> b 4 f h w.
        vae = models.vae
        frames = rearrange(pixels, "b c t h w -> (b t) c h w").to(vae.dtype)
        dist = vae.encode(frames).latent_dist
        posterior = torch.cat([p[0] for p in draws]).to(device, dist.mean.dtype)
        latents = (dist.mean + dist.std * posterior) * vae.config.scaling_factor
        latents = rearrange(latents, "(b t) c h w -> b c t h w", b=b).float()
        # 2. Text, with dropout to the empty prompt.
        captions = [c if p[3] else "" for c, p in zip(batch["captions"], draws)]
        ids = models.tokenizer(captions, padding="max_length", max_length=models.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt").input_ids.to(device)
        text = models.text_encoder(ids)[0]

    timesteps = torch.cat([p[1] for p in draws]).to(device)
    noise = torch.stack([p[2] for p in draws]).to(device)
    keep_structure = torch.tensor([float(p[4]) for p in draws], device=device).view(b, 1, 1, 1, 1)
    structure = batch["structure"].to(device) * keep_structure
    model_input = denoiser.noisy_input(latents, noise, timesteps)

    kwargs = {}
    if config.model.keyframe:
        # The appearance keyframe is a clean frame of the same window: the centre one, or one chosen per step.
        k = centre_frame(f) if d.keyframe_index == "centre" else int(step_rng(t.seed, step).integers(f))
        kwargs = dict(keyframe_latent=latents[:, :, k], keyframe_index=k)
    prediction = trident(model_input, timesteps, text, structure_maps=[structure], structure_scale=1.0, **kwargs)
    return F.mse_loss(prediction.float(), noise.float())


def _prepare_run_folder(output: Path, config: TrainConfig, step: int) -> None:
    """Record the settings; keep only the loss lines up to `step` (a resumed run rewrites what came after)."""
    from ..config import to_yaml

    output.mkdir(parents=True, exist_ok=True)
    with atomic_path(output / "config.yaml") as tmp:
        tmp.write_text(to_yaml(config))
    kept = read_losses(output / LOSSES, up_to=step) if step else []
    with atomic_path(output / LOSSES) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))


def read_losses(path: Path, up_to: int) -> list[dict]:
    """The rows of a `losses.jsonl` up to step `up_to`; damaged lines (a torn write, an edit) are dropped with a
    warning: the log is a record of the run, and the checkpoint, not the log, says where it continues."""
    if not path.is_file():
        return []
    rows, damaged = [], 0
    with path.open("rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            valid = isinstance(row, dict) and type(row.get("step")) is int
            if not valid:
                damaged += line.strip() != b""
            elif row["step"] <= up_to:
                rows.append(row)
    if damaged:
        logger.warning("%s: dropped %d damaged line%s", path, damaged, "s" if damaged > 1 else "")
    return rows


def _structure_source(d):
    from ..annotators import build_annotator
    from ..annotators.cache import StructureCache

    annotator = build_annotator(d.annotator, **d.annotator_options)
    cache = StructureCache(Path(d.cache_dir).expanduser()) if d.cache_dir else None
    return annotator, cache


def _cast_frozen(models: TrainingModels, dtype: torch.dtype, device: torch.device) -> None:
    """Frozen parts in `dtype` on `device`; the trained ones stay float32 (mixed precision keeps float32 masters)."""
    trident = models.trident
    for module in (models.vae, models.text_encoder, *trident.main.frozen_modules(), *trident.structure):
        module.to(device) if dtype == torch.float32 else module.to(device=device, dtype=dtype)


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def loss_summary(losses: list[float]) -> tuple[float, float]:
    """Mean loss of the first and of the last tenth of the steps."""
    tenth = max(1, len(losses) // 10)
    return float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:]))
