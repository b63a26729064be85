"""SQL of the activation workflow (being split by concern: the whole module is ``devices`` for now)."""

from telegence_activation.repository.devices import *  # noqa: F403
