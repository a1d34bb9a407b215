"""Luigi tasks from an image collection to trained GAN models: `luigi --module pipeline TrainInpainter`."""
from .tasks.prepare import PrepareImages
from .tasks.generation import TrainDCGAN
from .tasks.inpainting import (EvaluateInpainter, PretrainCompletion, PretrainDiscriminator, RenderEvalGrid,
                               TrainInpainter, TrainJoint)

__all__ = ["PrepareImages", "PretrainCompletion", "PretrainDiscriminator", "TrainJoint",
           "RenderEvalGrid", "EvaluateInpainter", "TrainInpainter", "TrainDCGAN"]
