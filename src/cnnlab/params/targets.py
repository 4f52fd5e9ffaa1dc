"""One resolver for every id a stage or a command is given: an experiment, a study, a search, a transfer recipe,
a detect job or a data set. It says what the id is and all that follows from that, so no caller dispatches on
`id in params.<section>` itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cnnlab.params.base import Budget, ParamsError
from cnnlab.params.recipe import Augmentation, Experiment, default_loss
from cnnlab.params.search import Tune
from cnnlab.params.sections import DetectJob
from cnnlab.params.studies import AblationStudy, CrossvalStudy
from cnnlab.params.transfer import Transfer

if TYPE_CHECKING:
    from cnnlab.params.root import Params

Kind = Literal["experiment", "study", "search", "transfer", "detect_job", "dataset"]
KINDS: tuple[Kind, ...] = ("experiment", "study", "search", "transfer", "detect_job", "dataset")
# The MLflow tag that names a stage run's target, by kind
TAGS: dict[Kind, str] = {
    "experiment": "experiment_id",
    "study": "study",
    "search": "search",
    "transfer": "transfer",
    "detect_job": "detect_job",
    "dataset": "dataset",
}
# The stage that writes models/<id>.keras, by kind (the others make no model)
PRODUCERS: dict[Kind, str] = {"experiment": "train", "search": "retrain", "transfer": "finetune"}
Recipe = Experiment | CrossvalStudy | AblationStudy | Tune | Transfer | DetectJob | None


@dataclass(frozen=True)
class Target:
    """An id and what it is: its kind, its budget, its recipe on that budget (None for a data set), the data set it
    trains and is tested on (a data set's own name; None for a detect job), and how many training images it
    trains on (None: all of them)."""

    id: str
    kind: Kind
    budget: Budget
    recipe: Recipe
    dataset: str | None
    train_samples: int | None

    @property
    def tag(self) -> tuple[str, str]:
        """The MLflow tag (name, value) of a stage run on this target."""
        return TAGS[self.kind], self.id

    @property
    def producer(self) -> str | None:
        """The DVC stage that writes models/<id>.keras, or None for a target that makes no model."""
        return f"{PRODUCERS[self.kind]}@{self.id}" if self.kind in PRODUCERS else None

    @property
    def model_dataset(self) -> str:
        """The data set its model is trained and tested on; a ParamsError for an id that names no model."""
        if self.kind not in PRODUCERS or self.dataset is None:
            raise ParamsError(
                f"{self.id} is a {self.kind.replace('_', ' ')}, not a model: give an experiment, a search or a "
                "transfer recipe"
            )
        return self.dataset

    @property
    def augmentation(self) -> Augmentation | None:
        """The augmentation its model trained with; a search's is one of its hyperparameters (None here)."""
        return self.recipe.augmentation if isinstance(self.recipe, Experiment) else None

    def loss_for(self, num_classes: int) -> str:
        """The loss its model trained with (a searched CNN's head follows the number of classes)."""
        if isinstance(self.recipe, Experiment):
            return self.recipe.loss_for(num_classes)
        return default_loss(num_classes)


def resolve(params: Params, target_id: str) -> Target:
    """What `target_id` names in `params`; a ParamsError listing the known ids when it names nothing."""
    if target_id in params.experiments:
        budget = params.budget_of(target_id)
        recipe = params.recipe(target_id)
        samples = params.experiments[target_id].train_samples(budget)
        return Target(target_id, "experiment", budget, recipe, recipe.dataset, samples)
    if target_id in params.crossval or target_id in params.ablation:
        budget, study = params.study_budget(target_id), params.study(target_id)
        dataset = next(iter(params.study_arms(target_id).values())).dataset
        return Target(target_id, "study", budget, study, dataset, study.train_samples(budget))
    if target_id in params.tune:
        budget, search = params.search_budget(target_id), params.search(target_id)
        samples = params.tune[target_id].train_samples(budget)
        return Target(target_id, "search", budget, search, search.dataset, samples)
    if target_id in params.finetune.recipes:
        budget, transfer = params.transfer_budget(target_id), params.transfer(target_id)
        samples = params.finetune.recipes[target_id].train_samples(budget)
        return Target(target_id, "transfer", budget, transfer, transfer.dataset, samples)
    if target_id in params.detect.jobs:
        return Target(target_id, "detect_job", params.budget, params.detect.jobs[target_id], None, None)
    if target_id in params.datasets:
        return Target(target_id, "dataset", params.budget, None, target_id, None)
    known = [*params.experiments, *params.crossval, *params.ablation, *params.tune, *params.finetune.recipes,
             *params.detect.jobs, *params.datasets]  # fmt: skip
    raise ParamsError(f"unknown id {target_id!r}: no experiment, study, search, transfer recipe, detect job or "
                      f"data set of params.yaml has it; the ids: {', '.join(known)}")  # fmt: skip
