"""Draw a model's predictions on images or a video.

    python demo/demo.py --config-file configs/shapes/mask2former_R18_quickstart.yaml \
        --input "images/*.png" --output out/ --opts MODEL.WEIGHTS output/model_final.pth
"""

import argparse
import logging

import cv2
import tqdm

from mask2former.config import get_cfg
from mask2former.data.detection_utils import read_image
from mask2former.engine.defaults import DefaultPredictor
from mask2former.engine.demo import VisualizationDemo, expand_inputs, output_path, write_rgb
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
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.video_input):
        parser.error("give exactly one of --input and --video-input")
    if not args.output:
        parser.error("--output is required")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="mask2former")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    predictor = DefaultPredictor(cfg)
    if is_video_model(predictor.model):  # tracked instances, clip by clip: any video length
        demo = VideoTrackingDemo(predictor, args.confidence_threshold)
    else:
        demo = VisualizationDemo(predictor, args.confidence_threshold)
    if args.input:
        files = expand_inputs(args.input)
        for path in tqdm.tqdm(files, desc="images"):
            _, drawing = demo.run_on_image(read_image(path, format="BGR"))
            write_rgb(output_path(args.output, path, len(files)), drawing)
        logging.getLogger("mask2former").info("wrote %d drawings to %s", len(files), args.output)
        return
    capture = cv2.VideoCapture(args.video_input)
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {args.video_input}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for drawing in tqdm.tqdm(demo.run_on_video(capture), total=frames, desc="frames"):
        writer.write(drawing[:, :, ::-1])
    writer.release()
    capture.release()


if __name__ == "__main__":
    main()
