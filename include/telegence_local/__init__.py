"""Local tooling that wires the product and the simulator together: the live stack and ``make demo``.

``telegence_activation`` (the product) never imports this package nor ``telegence_simulator``;
this package imports both. ``python -m telegence_local.demo`` runs the demo.
"""
