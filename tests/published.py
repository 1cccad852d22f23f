"""What the tests check the package against: the published configs, tables and figures.

Everything here lives in the repository (``configs/`` and ``tests/reference/``, whose README
names each file's source), so the suite runs on a bare clone.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
METADATA_DIR = REFERENCE_DIR / "metadata"
DATASETS_DATA_DIR = REFERENCE_DIR / "datasets-data"
CONFIG_HASHES = REFERENCE_DIR / "published_configs.sha256"
VIDEO_CONFIG_HASHES = REFERENCE_DIR / "published_video_configs.sha256"

# Parameter counts of the published models, from the project's reference README
# (../shared/reference/README.md, "Facts about the published models").
PARAMS_M2F_R50_COCO_PANOPTIC = 43_983_878
PARAMS_M2F_SWIN_L_200_QUERIES_COCO_PANOPTIC = 215_535_610
PARAMS_MASKFORMER_R50_ADE20K_150 = 41_254_743
PARAMS_M2F_R50_YTVIS_2019 = 43_959_977


def published_config_hashes() -> dict[str, str]:
    """{path relative to ``configs/``: sha256} of the published Mask2Former (57 files) and
    MaskFormer (36 files, under ``maskformer/``) image configs, ``_BASE_`` files included."""
    return _read_hashes(CONFIG_HASHES)


def published_video_config_hashes() -> dict[str, str]:
    """{path relative to ``configs/``: sha256} of the published Mask2Former video configs
    (14 files under ``youtubevis_2019/`` and ``youtubevis_2021/``, ``_BASE_`` files included)."""
    return _read_hashes(VIDEO_CONFIG_HASHES)


def _read_hashes(path: Path) -> dict[str, str]:
    hashes = {}
    for line in path.read_text().splitlines():
        digest, relative = line.split(maxsplit=1)
        hashes[relative] = digest
    return hashes


def published_configs() -> list[Path]:
    """The shipped copies of the published configs, in the order of their relative paths."""
    return [CONFIG_DIR / relative for relative in sorted(published_config_hashes())]
