"""The aarch64 (ARM) device: an emulated board (qemu-user + a cross-built TVM runtime) or a real
one over TVM RPC.  See :mod:`convtvm.arm.device`.

    import convtvm.arm as arm
    arm.setup()                        # `convtvm device setup arm-emulated`
    sess = arm.open_session()          # or open_session(rpc="HOST:PORT") / (tracker="HOST:PORT", key=K)
"""

from .device import (  # noqa: F401
    APT_PACKAGES,
    EM_AARCH64,
    SETUP_COMMAND,
    cache_root,
    check_tools,
    cross_compiler,
    default_target,
    elf_machine,
    export_library,
    is_setup,
    load_module,
    main,
    make_local_builder,
    make_rpc_runner,
    ms_build,
    ms_builder_initializer,
    ms_cleanup,
    ms_connect_server,
    ms_create_session,
    ms_export,
    ms_upload_module,
    open_session,
    runtime_dir,
    runtime_info,
    server_command,
    setup,
)
