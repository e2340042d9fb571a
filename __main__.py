"""k3s-cilium: load and validate the stack config, build the components, export outputs."""

import pulumi

from stacks import plan
from stacks.config import NAMESPACE, StackConfig, config_keys, parse
from stacks.features import resolve

config = pulumi.Config(NAMESPACE)
stack_config: StackConfig = parse(
    {
        key: config.get("tier") if key == "tier" else config.get_object(key)
        for key in config_keys(StackConfig)
        if config.get(key) is not None
    }
)
features = resolve(stack_config)

pulumi.export("tier", stack_config.tier)
pulumi.export("features", list(features.enabled))
pulumi.export("plan", plan.build(pulumi.get_stack(), stack_config))
