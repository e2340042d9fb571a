"""Pure-Python stack logic: config model, feature tiers, Helm values and K3s flags.

Nothing in this package creates Pulumi resources.
"""
