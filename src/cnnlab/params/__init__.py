"""The params.yaml schema: every knob of the pipeline, checked before any work starts.

Validation fails fast with a message that names the key, what was found and the allowed values, so a typo
costs a second, not an hour of training. One module per part of params.yaml: `base` (shared types),
`recipe` (experiments), `studies` (crossval, ablation), `search` (tune), `transfer` (finetune), `sections`
(data, mlflow, explain, detect, quick_floors), `root` (the whole file), `targets` (what an id names), `messages`
(validation errors as one line each) and `loading` (reading it).
"""

from cnnlab.params.base import (
    BUDGETS,
    FILL_MODES,
    Budget,
    Loss,
    ParamsError,
    PositiveInt,
    Strict,
    WithBudgets,
    check_run_list,
    merged,
)
from cnnlab.params.loading import (
    load_params,
    parse_params,
    read_yaml,
)
from cnnlab.params.recipe import (
    Augmentation,
    BudgetOverride,
    Callbacks,
    EarlyStopping,
    Experiment,
    Optimizer,
    default_loss,
    validation_fraction,
)
from cnnlab.params.root import (
    Params,
)
from cnnlab.params.search import (
    DIMENSIONS,
    OPTIMIZERS,
    Dimension,
    Range,
    SearchSpace,
    Tune,
    TuneBudget,
    dimension_values,
)
from cnnlab.params.sections import (
    CustomDataset,
    Data,
    Detect,
    DetectJob,
    DetectSettings,
    Explain,
    Floor,
    FloorSection,
    QuickFloors,
    Tracking,
    Views,
)
from cnnlab.params.studies import (
    ARM_NAME,
    AblationStudy,
    CrossvalStudy,
    Folds,
    Study,
    StudyBudget,
)
from cnnlab.params.targets import KINDS, Kind, Target
from cnnlab.params.transfer import (
    Backbone,
    Finetune,
    FromLayer,
    Head,
    LastLayers,
    Trainable,
    Transfer,
    TransferBudget,
    keras_applications,
)

__all__ = [
    "ARM_NAME",
    "BUDGETS",
    "DIMENSIONS",
    "FILL_MODES",
    "KINDS",
    "OPTIMIZERS",
    "AblationStudy",
    "Augmentation",
    "Backbone",
    "Budget",
    "BudgetOverride",
    "Callbacks",
    "CrossvalStudy",
    "CustomDataset",
    "Data",
    "Detect",
    "DetectJob",
    "DetectSettings",
    "Dimension",
    "EarlyStopping",
    "Experiment",
    "Explain",
    "Finetune",
    "Floor",
    "FloorSection",
    "Folds",
    "FromLayer",
    "Head",
    "Kind",
    "LastLayers",
    "Loss",
    "Optimizer",
    "Params",
    "ParamsError",
    "PositiveInt",
    "QuickFloors",
    "Range",
    "SearchSpace",
    "Strict",
    "Study",
    "StudyBudget",
    "Target",
    "Tracking",
    "Trainable",
    "Transfer",
    "TransferBudget",
    "Tune",
    "TuneBudget",
    "Views",
    "WithBudgets",
    "check_run_list",
    "default_loss",
    "dimension_values",
    "keras_applications",
    "load_params",
    "merged",
    "parse_params",
    "read_yaml",
    "validation_fraction",
]
