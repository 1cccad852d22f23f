"""A ``predictor.py`` shaped like official Mask2Former's ``demo/predictor.py`` (itself
detectron2's), with ``detectron2`` replaced by ``mask2former`` in its imports.

``VisualizationDemo`` draws a ``DefaultPredictor``'s outputs with ``Visualizer`` (images)
or ``VideoVisualizer`` (frames); with ``parallel=True`` the model runs in worker processes
(``AsyncPredictor``, multiprocessing with the "spawn" start method). Used by ``demo.py``
next to it, for the tests in ``tests/compat``.
"""

import atexit
import bisect
import multiprocessing as mp
from collections import deque

import cv2
import torch

from mask2former.data import MetadataCatalog
from mask2former.engine.defaults import DefaultPredictor
from mask2former.utils.video_visualizer import VideoVisualizer
from mask2former.utils.visualizer import ColorMode, Visualizer


class VisualizationDemo:
    def __init__(self, cfg, instance_mode=ColorMode.IMAGE, parallel=False):
        names = cfg.DATASETS.TEST
        self.metadata = MetadataCatalog.get(names[0] if len(names) else "__unused")
        self.cpu_device = torch.device("cpu")
        self.instance_mode = instance_mode
        self.parallel = parallel
        if parallel:
            self.predictor = AsyncPredictor(cfg, num_gpus=torch.cuda.device_count())
        else:
            self.predictor = DefaultPredictor(cfg)

    def run_on_image(self, image):
        """``image``: (H, W, 3) BGR. Returns the predictions and a VisImage."""
        predictions = self.predictor(image)
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        vis_output = None
        if "panoptic_seg" in predictions:
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            vis_output = visualizer.draw_panoptic_seg_predictions(
                panoptic_seg.to(self.cpu_device), segments_info
            )
        else:
            if "sem_seg" in predictions:
                labels = predictions["sem_seg"].argmax(dim=0).to(self.cpu_device)
                vis_output = visualizer.draw_sem_seg(labels)
            if "instances" in predictions:
                instances = predictions["instances"].to(self.cpu_device)
                vis_output = visualizer.draw_instance_predictions(predictions=instances)
        return predictions, vis_output

    @staticmethod
    def _frames(video):
        while video.isOpened():
            ok, frame = video.read()
            if not ok:
                break
            yield frame

    def run_on_video(self, video):
        """Yield the BGR drawing of every frame of a ``cv2.VideoCapture``."""
        video_visualizer = VideoVisualizer(self.metadata, self.instance_mode)

        def draw(frame, predictions):
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if "panoptic_seg" in predictions:
                panoptic_seg, segments_info = predictions["panoptic_seg"]
                vis = video_visualizer.draw_panoptic_seg_predictions(
                    frame, panoptic_seg.to(self.cpu_device), segments_info
                )
            elif "instances" in predictions:
                instances = predictions["instances"].to(self.cpu_device)
                vis = video_visualizer.draw_instance_predictions(frame, instances)
            else:
                labels = predictions["sem_seg"].argmax(dim=0).to(self.cpu_device)
                vis = video_visualizer.draw_sem_seg(frame, labels)
            return cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)

        frames = self._frames(video)
        if not self.parallel:
            for frame in frames:
                yield draw(frame, self.predictor(frame))
            return
        pending = deque()
        for count, frame in enumerate(frames):
            pending.append(frame)
            self.predictor.put(frame)
            if count >= self.predictor.default_buffer_size:
                yield draw(pending.popleft(), self.predictor.get())
        while pending:
            yield draw(pending.popleft(), self.predictor.get())


class AsyncPredictor:
    """Runs ``DefaultPredictor`` in worker processes; results come back in input order."""

    class _StopToken:
        pass

    class _PredictWorker(mp.Process):
        def __init__(self, cfg, task_queue, result_queue):
            self.cfg = cfg
            self.task_queue = task_queue
            self.result_queue = result_queue
            super().__init__()

        def run(self):
            predictor = DefaultPredictor(self.cfg)
            while True:
                task = self.task_queue.get()
                if isinstance(task, AsyncPredictor._StopToken):
                    break
                idx, image = task
                self.result_queue.put((idx, predictor(image)))

    def __init__(self, cfg, num_gpus: int = 1):
        num_workers = max(num_gpus, 1)
        self.task_queue = mp.Queue(maxsize=num_workers * 3)
        self.result_queue = mp.Queue(maxsize=num_workers * 3)
        self.procs = []
        for gpu in range(num_workers):
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.DEVICE = f"cuda:{gpu}" if num_gpus > 0 else "cpu"
            self.procs.append(
                AsyncPredictor._PredictWorker(cfg, self.task_queue, self.result_queue)
            )
        self.put_idx = 0
        self.get_idx = 0
        self.result_rank = []
        self.result_data = []
        for proc in self.procs:
            proc.start()
        atexit.register(self.shutdown)

    def put(self, image):
        self.put_idx += 1
        self.task_queue.put((self.put_idx, image))

    def get(self):
        self.get_idx += 1
        if self.result_rank and self.result_rank[0] == self.get_idx:
            result = self.result_data.pop(0)
            self.result_rank.pop(0)
            return result
        while True:
            idx, result = self.result_queue.get()
            if idx == self.get_idx:
                return result
            where = bisect.bisect(self.result_rank, idx)
            self.result_rank.insert(where, idx)
            self.result_data.insert(where, result)

    def __len__(self):
        return self.put_idx - self.get_idx

    def __call__(self, image):
        self.put(image)
        return self.get()

    def shutdown(self):
        for _ in self.procs:
            self.task_queue.put(AsyncPredictor._StopToken())

    @property
    def default_buffer_size(self):
        return len(self.procs) * 5
