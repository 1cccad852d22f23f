"""Default configuration: detectron2's keys used by the published configs, plus Mask2Former's.

Every key carries a one-line comment. Key names follow detectron2 and the published
Mask2Former / MaskFormer code so that their YAML files load unchanged, and every default is the
official one (detectron2's ``get_cfg()`` with ``add_deeplab_config`` and
``add_maskformer2_config``), except where a comment says otherwise:

- keys whose official default names a detectron2 model this package does not implement
  (``MODEL.META_ARCHITECTURE`` GeneralizedRCNN, ``MODEL.SEM_SEG_HEAD.NAME`` SemSegFPNHead,
  ``IN_FEATURES`` p2..p5) default to the Mask2Former ones; every published config sets them;
- ``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``, see its comment;
- extension keys, marked "(extension)", whose default reproduces the official behaviour (or, for
  a feature the official code lacks, leaves it off).

Every key is read by the code or listed in ``supported.NOT_READ`` (refused unless it keeps its
default); ``tests/test_config_keys_read.py`` checks it.
"""

from .config import CfgNode as CN

_C = CN()
_C.VERSION = 2  # config format version; not read, must stay 2 (no upgrade of older formats)

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = CN()
_C.MODEL.DEVICE = "cuda"  # "cuda" or "cpu"; get_cfg() sets "cpu" when CUDA is unavailable
_C.MODEL.META_ARCHITECTURE = "MaskFormer"  # name in META_ARCH_REGISTRY
_C.MODEL.WEIGHTS = ""  # checkpoint to initialise from: .pkl, .pth or .safetensors
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]  # per-channel mean, in INPUT.FORMAT order, 0-255
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]  # per-channel std, in INPUT.FORMAT order, 0-255
# detectron2's key: load instance masks. The video mapper reads it and, for training, needs
# True (it always loads masks, as the published one does; the published video configs set
# True); the image mappers do not read it and load the masks they need.
_C.MODEL.MASK_ON = False

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"  # name in BACKBONE_REGISTRY
_C.MODEL.BACKBONE.FREEZE_AT = 2  # freeze the stem (1) and the first N-1 stages; 0 freezes nothing

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34, 50, 101 or 152
_C.MODEL.RESNETS.OUT_FEATURES = ["res4"]  # stages to return, of res2..res5
_C.MODEL.RESNETS.NUM_GROUPS = 1  # 1 for ResNet, >1 for ResNeXt
_C.MODEL.RESNETS.NORM = "FrozenBN"  # FrozenBN, BN, SyncBN, GN or "" (none)
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64  # bottleneck width per group
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True  # stride in the first 1x1 (MSRA) or in the 3x3 (torchvision)
_C.MODEL.RESNETS.RES5_DILATION = 1  # dilation of res5 (1 or 2)
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # output channels of res2 (64 for R18/R34)
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64  # stem output channels (128 for the DeepLab stem)
_C.MODEL.RESNETS.STEM_TYPE = "deeplab"  # DeepLab builder: "deeplab" (three 3x3) or "basic" (7x7)
_C.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]  # DeepLab builder: res5 block dilation multipliers
# deformable convolutions in the ResNet are not implemented: the DEFORM_* keys are not read and
# must keep these values (config/supported.py)
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]  # per stage res2..res5
_C.MODEL.RESNETS.DEFORM_MODULATED = False  # modulated deformable convolutions (unsupported)
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1  # deformable offset groups (unsupported)

_C.MODEL.SWIN = CN()
_C.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224  # image size the weights were pre-trained at
_C.MODEL.SWIN.PATCH_SIZE = 4  # patch embedding stride
_C.MODEL.SWIN.EMBED_DIM = 96  # channels of the first stage
_C.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]  # blocks per stage
_C.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]  # attention heads per stage
_C.MODEL.SWIN.WINDOW_SIZE = 7  # attention window size
_C.MODEL.SWIN.MLP_RATIO = 4.0  # MLP hidden size / embedding size
_C.MODEL.SWIN.QKV_BIAS = True  # bias in the qkv projection
_C.MODEL.SWIN.QK_SCALE = None  # attention scale; None means head_dim ** -0.5
_C.MODEL.SWIN.DROP_RATE = 0.0  # dropout after embeddings and MLPs
_C.MODEL.SWIN.ATTN_DROP_RATE = 0.0  # dropout on attention weights
_C.MODEL.SWIN.DROP_PATH_RATE = 0.3  # stochastic depth, linearly increasing to this rate
_C.MODEL.SWIN.APE = False  # absolute position embedding
_C.MODEL.SWIN.PATCH_NORM = True  # LayerNorm after patch embedding
_C.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages to return
_C.MODEL.SWIN.USE_CHECKPOINT = False  # activation checkpointing in every block

_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"  # name in SEM_SEG_HEADS_REGISTRY
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # backbone features used
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255  # label of pixels ignored by losses and metrics
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 54  # number of classes, without no-object (detectron2: 54)
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128  # channels of the pixel decoder's convolutions (detectron2)
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4  # stride of the mask features
_C.MODEL.SEM_SEG_HEAD.NORM = "GN"  # normalisation in the pixel decoder
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0  # weight of per-pixel classification loss (baselines)
_C.MODEL.SEM_SEG_HEAD.MASK_DIM = 256  # channels of the per-pixel mask embeddings
_C.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0  # encoder layers of the pixel decoder
_C.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"  # name in PIXEL_DECODER_REGISTRY
# features the deformable encoder of MSDeformAttnPixelDecoder attends to
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
# Defined but not read by the official MSDeformAttnPixelDecoder, which samples 4 points and has
# MODEL.MASK_FORMER.NHEADS heads: these must keep their defaults (config/supported.py).
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4  # not read (4 points)
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8  # not read (MASK_FORMER.NHEADS)

_C.MODEL.MASK_FORMER = CN()
# name in TRANSFORMER_DECODER_REGISTRY. Official Mask2Former defaults to
# "MultiScaleMaskedTransformerDecoder", but every Mask2Former config sets it, while the MaskFormer
# (v1) configs do not (the v1 code has only this decoder): the v1 value is the default here.
_C.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "StandardTransformerDecoder"
_C.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = (
    "res5"  # decoder input: a backbone or pixel-decoder map
)
# (extension) mask loss and matching cost: "point" (Mask2Former: BCE + dice on sampled points),
# "full" (MaskFormer v1: focal + dice on full masks) or "auto": the decoder class's
# mask_loss_family, "point" for MultiScaleMaskedTransformerDecoder and "full" for
# StandardTransformerDecoder (and their subclasses) -- the official repository of each decoder
_C.MODEL.MASK_FORMER.MASK_LOSS = "auto"  # (extension) "auto", "point" or "full"
_C.MODEL.MASK_FORMER.DEEP_SUPERVISION = True  # losses on every decoder layer's prediction
_C.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1  # class-loss weight of the no-object class
_C.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0  # weight of the classification loss and cost
_C.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0  # weight of the dice loss and cost
_C.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0  # weight of the mask (focal or BCE) loss and cost
_C.MODEL.MASK_FORMER.NHEADS = 8  # decoder attention heads
_C.MODEL.MASK_FORMER.DROPOUT = 0.1  # decoder dropout
_C.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048  # decoder FFN hidden size
_C.MODEL.MASK_FORMER.ENC_LAYERS = 0  # encoder layers inside the v1 transformer decoder
_C.MODEL.MASK_FORMER.DEC_LAYERS = 6  # predictions made (Mask2Former: layers + 1 for the queries)
_C.MODEL.MASK_FORMER.PRE_NORM = False  # pre-norm transformer layers
_C.MODEL.MASK_FORMER.HIDDEN_DIM = 256  # query and decoder width
_C.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100  # number of queries
_C.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False  # 1x1 input projection even when widths match
_C.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = (
    32  # pad images to a multiple of this (0: none, <0: backbone's)
)
_C.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112  # points sampled per mask for loss and matching
_C.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0  # candidate points / sampled points
_C.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75  # share of points picked by uncertainty

_C.MODEL.MASK_FORMER.TEST = CN()
_C.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True  # return "sem_seg"
_C.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False  # return "instances"
_C.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False  # return "panoptic_seg"
_C.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0  # panoptic: minimum query score kept
_C.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0  # panoptic: minimum kept / full mask area
_C.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False  # resize logits first
# (extension) VideoMaskFormer inference in clips of this many frames (memory bounded by the clip,
# not the video), linked into tracks on the frames consecutive clips share; 0: the whole video
_C.MODEL.MASK_FORMER.TEST.CLIP_LENGTH = 0
# (extension) frames shared by consecutive clips (>= 1, < CLIP_LENGTH), read with CLIP_LENGTH > 0
_C.MODEL.MASK_FORMER.TEST.CLIP_OVERLAP = 2

# ---------------------------------------------------------------------------- #
# Input
# ---------------------------------------------------------------------------- #
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # shortest-edge sizes for training resize
# "choice" of MIN_SIZE_TRAIN or "range" between two; video mappers also take "choice_by_clip" /
# "range_by_clip" (one size for all frames of a clip)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333  # longest-edge limit for training resize
_C.INPUT.MIN_SIZE_TEST = 800  # shortest-edge size at test time (0 disables resizing)
_C.INPUT.MAX_SIZE_TEST = 1333  # longest-edge limit at test time
# Flip of the LSJ mappers and of DatasetMapper: "horizontal", "vertical" or "none". The
# mask_former_* and detr mappers always flip horizontally (as published): they refuse others.
# Video mappers also take "flip_by_clip" (horizontal, the same for all frames of a clip).
_C.INPUT.RANDOM_FLIP = "horizontal"
_C.INPUT.FORMAT = "BGR"  # channel order the model takes: "BGR" or "RGB"
# Instance masks of the LSJ mapper: "polygon" (published; polygon annotations only) or
# "bitmask" (also RLE). The mask_former_instance mapper rasterises either the same way.
_C.INPUT.MASK_FORMAT = "polygon"
# Training mapper of image datasets, a name in DATASET_MAPPER_REGISTRY (the test mapper is
# DatasetMapper). Video datasets (evaluator_type "ytvis") are mapped by a video mapper in
# training and testing: the named one if it maps videos, else "ytvis" when this is the default
# (the published video configs name no mapper: their train_net_video.py always uses the
# YouTube-VIS mapper); another image mapper is refused for them.
_C.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
_C.INPUT.COLOR_AUG_SSD = False  # SSD-style photometric distortion
# mask_former_* mappers: pad (right / bottom; a longer side is cut) to this square, <= 0: no
_C.INPUT.SIZE_DIVISIBILITY = -1
_C.INPUT.IMAGE_SIZE = 1024  # large-scale jitter: target size
_C.INPUT.MIN_SCALE = 0.1  # large-scale jitter: smallest scale
_C.INPUT.MAX_SCALE = 2.0  # large-scale jitter: largest scale

# Video (official add_maskformer2_video_config's keys, with its defaults; read by the video
# mapper): a training clip is SAMPLING_FRAME_NUM frames of one video, drawn within
# SAMPLING_FRAME_RANGE frames of a random reference frame
_C.INPUT.SAMPLING_FRAME_NUM = 2  # frames per training clip
_C.INPUT.SAMPLING_FRAME_RANGE = 20  # largest distance of a clip's frames from its reference frame
_C.INPUT.SAMPLING_FRAME_SHUFFLE = False  # shuffle the clip's frames instead of keeping their order
# video mappers: the official extra training augmentations ("brightness", "contrast",
# "saturation", "rotation"); not implemented: only [] is accepted
_C.INPUT.AUGMENTATIONS = []

_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = False  # random crop during training
_C.INPUT.CROP.TYPE = "relative_range"  # relative, relative_range, absolute or absolute_range
_C.INPUT.CROP.SIZE = [0.9, 0.9]  # crop size (fractions or pixels, by TYPE)
_C.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0  # max share one category may take of a crop

# ---------------------------------------------------------------------------- #
# Datasets and loading
# ---------------------------------------------------------------------------- #
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()  # registered dataset names for training
_C.DATASETS.TEST = ()  # registered dataset names for evaluation
# (extension) dataset folders to register first (datasets/README.md, "Your own dataset"): a
# folder registers <name>_<split> and <name>_<split>_{panoptic,instance,sem_seg}
_C.DATASETS.FOLDERS = ()

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # loader worker processes per training process
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch images of like aspect ratio together
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"  # training sampler name
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images without annotations
# (extension) skip an unreadable training sample with a warning; False fails on it, as
# officially. Training only: evaluation always fails on one (skipping would change the metric)
_C.DATALOADER.SKIP_BAD_SAMPLES = False

# ---------------------------------------------------------------------------- #
# Solver
# ---------------------------------------------------------------------------- #
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "ADAMW"  # "ADAMW" or "SGD"
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # WarmupMultiStepLR, WarmupCosineLR, WarmupPolyLR
_C.SOLVER.MAX_ITER = 40000  # training iterations
_C.SOLVER.BASE_LR = 0.001  # learning rate at the end of warm-up
_C.SOLVER.BASE_LR_END = 0.0  # final learning rate of the cosine schedule
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.NESTEROV = False  # not read (the official SGD has none); must stay False
_C.SOLVER.WEIGHT_DECAY = 0.0001  # weight decay of ordinary parameters
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of normalisation layers' parameters
_C.SOLVER.WEIGHT_DECAY_EMBED = 0.0  # weight decay of embeddings and relative position tables
_C.SOLVER.BACKBONE_MULTIPLIER = 0.1  # LR multiplier of backbone parameters
_C.SOLVER.GAMMA = 0.1  # multi-step LR decay factor
_C.SOLVER.STEPS = (30000,)  # iterations at which multi-step LR decays
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000  # LR factor at the start of warm-up
_C.SOLVER.WARMUP_ITERS = 1000  # warm-up iterations
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.POLY_LR_POWER = 0.9  # exponent of the poly schedule
_C.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0  # poly: constant LR factor once below this
_C.SOLVER.CHECKPOINT_PERIOD = 5000  # iterations between checkpoints
_C.SOLVER.IMS_PER_BATCH = 16  # images per iteration over all processes
_C.SOLVER.REFERENCE_WORLD_SIZE = 0  # rescale batch and LR for another world size (0: off)

_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip gradients
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"  # "value", "norm" (per parameter) or "full_model"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # threshold of value or norm clipping
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the p-norm for norm clipping

_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # mixed-precision training
# (extension) autocast dtype: "float16" with a grad scaler (the official AMP) or "bfloat16"
_C.SOLVER.AMP.PRECISION = "float16"

# (extension) keep OUTPUT_DIR/model_best.pth: detectron2's hooks.BestCheckpointer, which
# detectron2 leaves to user code, wired from the config. After each evaluation (of METRIC from
# the evaluators, e.g. "sem_seg/mIoU", at TEST.EVAL_PERIOD) or validation loss (METRIC "val_*",
# at TEST.VAL_LOSS.PERIOD) and after the last iteration, a better value saves the checkpoint
_C.SOLVER.BEST_CHECKPOINTER = CN()
_C.SOLVER.BEST_CHECKPOINTER.ENABLED = False  # (extension) keep the best checkpoint
_C.SOLVER.BEST_CHECKPOINTER.METRIC = ""  # (extension) "task/metric" or "val_<loss term>"
_C.SOLVER.BEST_CHECKPOINTER.MODE = "max"  # (extension) "max" or "min": which value is best

# ---------------------------------------------------------------------------- #
# Test
# ---------------------------------------------------------------------------- #
_C.TEST = CN()
_C.TEST.EXPECTED_RESULTS = []  # [[task, metric, value, tolerance], ...] checked after evaluation
_C.TEST.EVAL_PERIOD = 0  # iterations between evaluations during training (0: only at the end)
_C.TEST.DETECTIONS_PER_IMAGE = 100  # instance inference: keep the top-k (query, class) pairs
# (extension) inference runs each image of a batch alone (padded to its own size), so its
# results do not depend on the other images; False: the published batched inference, where
# padding to the largest image of the batch reaches every image's features
_C.TEST.BATCH_INDEPENDENT = False
# (extension) inference precision: "float32" (as officially), or "bfloat16": the model's forward
# at inference (backbone, pixel decoder, transformer decoder) under torch.autocast in bfloat16,
# post-processing in float32. On a CPU it needs bfloat16 instructions (AVX512-BF16 or AMX)
_C.TEST.PRECISION = "float32"

# (extension) sliding-window inference for large images: each image, at the network input size
# (after the INPUT.MIN_SIZE_TEST resize; 0 keeps the original size), is run tile by tile and the
# tiles' sem_seg (mean over overlapping tiles) and panoptic_seg (stitched) are merged, so memory
# is one tile's plus a few full-size buffers (modeling/sliding_window.py). One tile covering the
# image gives exactly whole-image inference. Images are run alone, whatever BATCH_INDEPENDENT
# says; instances are not merged (INSTANCE_ON must be False)
_C.TEST.SLIDING_WINDOW = CN()
_C.TEST.SLIDING_WINDOW.ENABLED = False  # (extension) tile by tile inference; False: whole images
_C.TEST.SLIDING_WINDOW.TILE_SIZE = (512, 512)  # (extension) (height, width) of a tile, pixels
_C.TEST.SLIDING_WINDOW.OVERLAP = (128, 128)  # (extension) pixels neighbouring tiles share (h, w)

_C.TEST.AUG = CN()
_C.TEST.AUG.ENABLED = False  # semantic test-time augmentation
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)  # shortest-edge sizes
_C.TEST.AUG.MAX_SIZE = 4000  # longest-edge limit
_C.TEST.AUG.FLIP = True  # add horizontally flipped copies

_C.TEST.PRECISE_BN = CN()
# every EVAL_PERIOD and after the last iteration, before evaluating: recompute the statistics
# of the BatchNorm layers in training mode (none: no effect) on batches of a second train loader
_C.TEST.PRECISE_BN.ENABLED = False  # precise BN on or off (see above)
_C.TEST.PRECISE_BN.NUM_ITER = 200  # batches the statistics are computed on

# (extension) every PERIOD iterations and after the last one, the training losses on validation
# images (training mapper, no gradients, BatchNorm / dropout in eval mode, fixed seed), averaged
# over batches and processes, logged as val_<term> and val_total_loss (hooks.ValidationLoss);
# the writers write every 20 iterations the latest value of each: use a PERIOD of 20 or more
_C.TEST.VAL_LOSS = CN()
_C.TEST.VAL_LOSS.PERIOD = 0  # (extension) iterations between validation losses; 0: off
_C.TEST.VAL_LOSS.DATASETS = ()  # (extension) registered dataset names; empty: DATASETS.TEST
_C.TEST.VAL_LOSS.NUM_ITER = 0  # (extension) batches per process at most; 0: all of them

# ---------------------------------------------------------------------------- #
# Misc
# ---------------------------------------------------------------------------- #
_C.OUTPUT_DIR = "./output"  # where checkpoints, logs and results go
_C.SEED = -1  # random seed; negative picks one from time and pid
_C.CUDNN_BENCHMARK = False  # cudnn autotuning
# (extension) deterministic training: default_setup turns on torch.use_deterministic_algorithms
# and cudnn.deterministic and sets CUBLAS_WORKSPACE_CONFIG=:4096:8 when unset; needs SEED >= 0
# and CUDNN_BENCHMARK False. Same weights bit for bit on every run with the same hardware,
# software and number of processes; slower (see README)
_C.DETERMINISTIC = False  # (extension) deterministic training, off as officially
_C.VIS_PERIOD = 0  # training visualisation period; not implemented, must stay 0
_C.GLOBAL = CN()
_C.GLOBAL.HACK = 1.0  # detectron2 key nothing reads; must stay 1.0
