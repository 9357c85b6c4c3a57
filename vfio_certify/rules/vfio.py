"""vfio.module[...] and vfio.device_node: the VFIO driver stack on the host."""
from __future__ import annotations

from ..facts import HostFacts
from ..facts.kconfig import iommufd_container
from ..model import CheckResult, Outcome, spoken_list
from ..snapshot.reader import PathState
from .catalog import RECOMMENDED, REQUIRED, check, not_collected, result
from .remedy import kernel_build, load_module, reinstall_modules

MODULES = ["vfio", "vfio_pci", "vfio_iommu_type1"]
_CONFIG_OF = {"vfio": "CONFIG_VFIO", "vfio_pci": "CONFIG_VFIO_PCI", "vfio_iommu_type1": "CONFIG_VFIO_IOMMU_TYPE1"}


def module_state(facts: HostFacts, module: str) -> tuple[str, list[str]]:
    """('loaded' | 'builtin' | 'loadable' | 'missing' | 'unknown', evidence)."""
    m = facts.modules
    evidence = []
    if m.loaded is not None and module in m.loaded:
        return "loaded", [f"/proc/modules: {module} ({m.loaded[module]})"]
    if m.builtin is not None and module in m.builtin:
        return "builtin", [f"modules.builtin lists {module}"]
    if m.loaded is None and m.in_sysfs is not None and module in m.in_sysfs:
        return "loaded", [f"/sys/module/{module} present"]
    if m.loadable is not None and module in m.loadable:
        return "loadable", [f"modules.dep: {m.loadable[module]}"]
    if m.in_sysfs is not None and module in m.in_sysfs:
        return "builtin", [f"/sys/module/{module} present but not in /proc/modules: built in"]
    known = [m.loaded, m.builtin, m.loadable]
    if all(k is None for k in known):
        return "unknown", []
    if m.loaded is not None:
        evidence.append(f"/proc/modules: no {module}")
    evidence.append(f"modules.builtin: no {module}" if m.builtin is not None else "modules.builtin: not collected")
    evidence.append(f"modules.dep: no {module}" if m.loadable is not None else "modules.dep: not collected")
    return ("missing" if m.builtin is not None and m.loadable is not None else "unknown"), evidence


@check("vfio.module", REQUIRED, "the vfio module is loaded, built in or loadable")
def module(facts: HostFacts, name: str) -> CheckResult:
    check_id = f"{module.id}[{name}]"
    state, evidence = module_state(facts, name)
    option = _CONFIG_OF[name]
    config_value = facts.kernel_config.value(option) if facts.kernel_config else None
    if facts.kernel_config is not None:
        evidence.append(facts.kernel_config.line(option))
    if state == "loaded":
        return result(check_id, Outcome.PASSED, f"{name} is loaded", evidence)
    if name == "vfio_iommu_type1" and state in ("missing", "unknown") and iommufd_container(facts.kernel_config):
        return result(check_id, Outcome.PASSED, "not needed: iommufd provides the VFIO container (/dev/vfio/vfio)",
                      [iommufd_container(facts.kernel_config), *evidence])
    if state == "builtin":
        note = "" if config_value in (None, "y") else f" (config says {option}={config_value}: the config and the kernel disagree)"
        return result(check_id, Outcome.WARNING if note else Outcome.PASSED, f"{name} is built into the kernel{note}", evidence)
    if state == "loadable":
        if config_value == "y":
            message = f"{name} is a loadable module although the config says {option}=y: the config and the modules disagree"
            return result(check_id, Outcome.WARNING, message, evidence)
        return result(check_id, Outcome.PASSED,
                      f"{name} is loadable (not loaded yet: libvirt loads it for managed='yes' hostdevs)", evidence,
                      load_module(facts, name) if name == "vfio_pci" else "")
    if state == "unknown":
        config = facts.kernel_config
        missing = [what for what, value in (("/proc/modules", facts.modules.loaded),
                                            ("modules.builtin", facts.modules.builtin),
                                            ("modules.dep", facts.modules.loadable)) if value is None]
        # What was read, said after the list: the list is what to collect, the same words as kernel.config's
        notes = ["/proc/modules does not list it"] if facts.modules.loaded is not None else []
        if config is not None and config_value is None and config.truncated:
            missing.append(f"the rest of {config.source}")
            notes.append(f"{option} is not in what was read of it")
        elif config is not None and config_value not in ("y", "m"):
            # No module lists to consult, but the config settles it: the kernel lacks the driver.
            return result(check_id, Outcome.FAILED, f"{name} is not available: {config.line(option)}",
                          evidence, kernel_build(option), [f"kernel.config[{option}]"])
        return result(check_id, Outcome.SKIPPED,
                      f"not judged: {spoken_list(missing)} {'were' if len(missing) > 1 else 'was'} not collected"
                      + (f" ({'; '.join(notes)})" if notes else ""))
    if config_value == "m":
        return result(check_id, Outcome.FAILED,
                      f"{name} is configured as a module ({option}=m) but its file is missing from /lib/modules/{facts.kernel_release}",
                      evidence, reinstall_modules(facts))
    built_without = facts.kernel_config is not None and config_value != "y"  # the config explains it (a cause that failed)
    return result(check_id, Outcome.FAILED, f"{name} is neither loaded, built in nor installed", evidence,
                  kernel_build(option), [f"kernel.config[{option}]"] if built_without else [])


@check("vfio.device_node", RECOMMENDED, "/dev/vfio/vfio exists")
def device_node(facts: HostFacts) -> CheckResult:
    state = facts.vfio_container
    if state is PathState.NOT_COLLECTED:
        return not_collected(device_node.id, "/dev/vfio")
    if state is PathState.PRESENT:
        return result(device_node.id, Outcome.PASSED, "/dev/vfio/vfio exists", ["/dev/vfio/vfio present"])
    vfio_state, evidence = module_state(facts, "vfio")
    evidence.insert(0, "/dev/vfio/vfio absent")
    if vfio_state == "loadable":
        return result(device_node.id, Outcome.WARNING,
                      "/dev/vfio/vfio appears when the vfio module loads (it is not loaded yet)", evidence,
                      load_module(facts, "vfio_pci"))
    return result(device_node.id, Outcome.FAILED, "/dev/vfio/vfio does not exist", evidence,
                  "Load vfio (modprobe vfio-pci); if it is built in and the node is still missing, check that devtmpfs is mounted on /dev.",
                  [f"{module.id}[vfio]"] if vfio_state == "missing" else [])
