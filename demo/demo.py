"""Draw a model's predictions on images or a video.

    python demo/demo.py --config-file configs/shapes/mask2former_R18_quickstart.yaml \
        --input "images/*.png" --output out/ --opts MODEL.WEIGHTS output/model_final.pth

Images: ``--output`` is a directory (an existing one, one ending in ``/``, or whenever there
are several inputs; one ``<input stem>.png`` each) or, for one input, an image file (.png,
.jpg, ...). Video: ``--output`` is a .mp4, .avi, .mov or .mkv file, or a directory, which
receives ``<video stem>.mp4``. Missing directories are created; an output name that cannot
be written is refused before the model is built.
"""

import argparse

import cv2
import tqdm

from mask2former.config import get_cfg
from mask2former.data.detection_utils import read_image
from mask2former.engine.defaults import DefaultPredictor
from mask2former.engine.demo import (
    VisualizationDemo,
    expand_inputs,
    open_video_writer,
    output_path,
    video_output_path,
    write_rgb,
)
from mask2former.engine.video_demo import VideoTrackingDemo, is_video_model
from mask2former.utils.logger import setup_logger


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", help="image files or globs")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument(
        "--output", help="output file or directory (a video file for --video-input)"
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="for instances")
    parser.add_argument(
        "--low-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute the outputs at the image's size a band at a time (the default); "
        "--no-low-memory upsamples every query's mask at once, as evaluation does",
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.video_input):
        parser.error("give exactly one of --input and --video-input")
    if not args.output:
        parser.error("--output is required")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logger = setup_logger(name="mask2former")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    if args.input:
        files = expand_inputs(args.input)
        targets = [output_path(args.output, path, len(files)) for path in files]
        demo = _build_demo(cfg, args)
        for path, target in zip(tqdm.tqdm(files, desc="images"), targets):
            image = read_image(path, format="BGR")
            if not isinstance(demo, VisualizationDemo):
                demo.run_on_image(image)  # a video model: refuses, naming --video-input
            write_rgb(target, demo.drawing(image))
        logger.info("wrote %d drawings to %s", len(files), args.output)
        return
    capture = cv2.VideoCapture(args.video_input)
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {args.video_input}")
    target = video_output_path(args.output, args.video_input)
    demo = _build_demo(cfg, args)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = open_video_writer(target, fps, size)
    written = 0
    try:
        for drawing in tqdm.tqdm(demo.run_on_video(capture), total=frames, desc="frames"):
            writer.write(drawing[:, :, ::-1])
            written += 1
    finally:
        writer.release()
        capture.release()
    logger.info("wrote %d frames to %s", written, target)


def _build_demo(cfg, args) -> VisualizationDemo | VideoTrackingDemo:
    predictor = DefaultPredictor(cfg, low_memory=args.low_memory)
    if is_video_model(predictor.model):  # tracked instances, clip by clip: any video length
        return VideoTrackingDemo(predictor, args.confidence_threshold)
    return VisualizationDemo(predictor, args.confidence_threshold)


if __name__ == "__main__":
    main()
