"""A ``demo.py`` shaped like official Mask2Former's ``demo/demo.py``, with ``detectron2``
replaced by ``mask2former`` in its imports.

Draws predictions on images (``--input``) or a video (``--video-input``) into ``--output``.
One addition over the official script: ``--parallel`` runs the model in a worker process
(``AsyncPredictor``), which the official ``VisualizationDemo`` supports but its script never
switches on. Used by the tests in ``tests/compat``.
"""

import argparse
import glob
import multiprocessing as mp
import os

# fmt: off
import sys

sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
# fmt: on

import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402
from predictor import VisualizationDemo  # noqa: E402

from mask2former import add_maskformer2_config  # noqa: E402
from mask2former.config import get_cfg  # noqa: E402
from mask2former.data.detection_utils import read_image  # noqa: E402
from mask2former.projects.deeplab import add_deeplab_config  # noqa: E402
from mask2former.utils.logger import setup_logger  # noqa: E402


def setup_cfg(args):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def get_parser():
    parser = argparse.ArgumentParser(description="mask2former demo, official layout")
    parser.add_argument("--config-file", metavar="FILE", required=True)
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--input", nargs="+", help="image files, or one glob pattern")
    parser.add_argument("--output", help="file or directory for the drawings")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--parallel", action="store_true", help="predict in a worker process")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE pairs")
    return parser


def video_format_works(codec, file_ext):
    with tempfile.TemporaryDirectory(prefix="video_format_test") as folder:
        filename = os.path.join(folder, "test_file" + file_ext)
        writer = cv2.VideoWriter(
            filename=filename,
            fourcc=cv2.VideoWriter_fourcc(*codec),
            fps=30.0,
            frameSize=(10, 10),
            isColor=True,
        )
        for _ in range(30):
            writer.write(np.zeros((10, 10, 3), np.uint8))
        writer.release()
        return os.path.isfile(filename)


def run_on_images(demo, args, logger):
    if len(args.input) == 1:
        args.input = glob.glob(os.path.expanduser(args.input[0]))
        assert args.input, "The input path(s) was not found"
    for path in tqdm.tqdm(args.input, disable=not args.output):
        img = read_image(path, format="BGR")
        start = time.time()
        predictions, visualized_output = demo.run_on_image(img)
        found = (
            f"detected {len(predictions['instances'])} instances"
            if "instances" in predictions
            else "finished"
        )
        logger.info(f"{path}: {found} in {time.time() - start:.2f}s")
        if os.path.isdir(args.output):
            out_filename = os.path.join(args.output, os.path.basename(path))
        else:
            assert len(args.input) == 1, "Please specify a directory with args.output"
            out_filename = args.output
        visualized_output.save(out_filename)


def run_on_video_file(demo, args):
    video = cv2.VideoCapture(args.video_input)
    width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS)
    num_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    codec, file_ext = ("x264", ".mkv") if video_format_works("x264", ".mkv") else ("mp4v", ".mp4")
    if codec == "mp4v":
        warnings.warn("x264 codec not available, switching to mp4v")
    if os.path.isdir(args.output):
        output_fname = os.path.join(args.output, os.path.basename(args.video_input))
        output_fname = os.path.splitext(output_fname)[0] + file_ext
    else:
        output_fname = args.output
    assert not os.path.isfile(output_fname), output_fname
    output_file = cv2.VideoWriter(
        filename=output_fname,
        fourcc=cv2.VideoWriter_fourcc(*codec),
        fps=float(fps),
        frameSize=(width, height),
        isColor=True,
    )
    assert os.path.isfile(args.video_input)
    for vis_frame in tqdm.tqdm(demo.run_on_video(video), total=num_frames):
        output_file.write(vis_frame)
    video.release()
    output_file.release()


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    args = get_parser().parse_args()
    setup_logger(name="fvcore")
    logger = setup_logger()
    logger.info("Arguments: " + str(args))
    cfg = setup_cfg(args)
    demo = VisualizationDemo(cfg, parallel=args.parallel)
    assert args.output, "this test demo writes files only: give --output"
    if args.input:
        run_on_images(demo, args, logger)
    elif args.video_input:
        run_on_video_file(demo, args)
    else:
        raise SystemExit("give --input or --video-input")
