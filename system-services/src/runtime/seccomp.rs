//! The default seccomp profile of non-privileged containers, and the filter
//! that enforces it.
//!
//! The profile is Docker's default as it applies on x86_64: the syscalls
//! Docker's profile leaves out are refused with `EPERM`, except those it
//! allows when the container holds a capability (`CAP_SYS_TIME` lets chronyd
//! set the clock, `CAP_SYS_ADMIN` lets a container mount and make
//! namespaces); `clone` with a namespace flag is refused without
//! `CAP_SYS_ADMIN`, `clone3` answers `ENOSYS` (so C libraries fall back to
//! `clone`, whose flags can be checked), and `personality` takes only the
//! values Docker allows. Docker writes it as an allowlist; here it is the
//! same refusals written as a denylist, so a syscall newer than this list is
//! allowed where Docker's profile would refuse it. Syscalls of other ABIs
//! (i386 through `int 0x80`, x32) are refused: the list names x86_64's.
//!
//! It goes into the OCI spec (`linux.seccomp`), where it can be read. youki's
//! libcontainer applies a spec's profile only when built with libseccomp, a C
//! library that does not link into the static musl `berth`; so berthd's
//! [`SeccompExecutor`] compiles the spec's profile to a classic BPF program
//! itself ([`compile`]) and installs it in the container's init, just before
//! the exec. By then libcontainer has dropped the capabilities, and without
//! `CAP_SYS_ADMIN` the kernel takes a filter only from a process with
//! `no_new_privs`: a confined container runs with `no_new_privileges` set
//! (Docker's default leaves it off; setuid binaries in the container do not
//! gain privileges). `security_opt: [seccomp=unconfined]` opts out of both.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall, Spec,
};
use oci_spec::runtime::{Capabilities, Capability};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: unknown syscall `{0}` (berthd's filter knows x86_64's by name)")]
    UnknownSyscall(String),
    #[error("seccomp: action {0:?} is not supported by berthd's filter")]
    Action(LinuxSeccompAction),
    #[error("seccomp: default action {0:?} is not supported (only SCMP_ACT_ALLOW)")]
    DefaultAction(LinuxSeccompAction),
    #[error("seccomp: argument condition {0} is not supported (one condition, MASKED_EQ, EQ or NE, on the low 32 bits)")]
    Condition(String),
    #[error("seccomp: the filter is too long for a classic BPF jump ({0} instructions)")]
    TooLong(usize),
    #[error("seccomp: cannot install the filter: {0}")]
    Install(std::io::Error),
}

/// What Docker's profile refuses on x86_64 unless the container holds
/// `.1` (`None`: always).
const REFUSED: &[(&str, Option<Capability>)] = &[
    ("acct", Some(Capability::SysPacct)),
    ("add_key", None),
    ("bpf", Some(Capability::SysAdmin)),
    ("clock_adjtime", Some(Capability::SysTime)),
    ("clock_settime", Some(Capability::SysTime)),
    ("settimeofday", Some(Capability::SysTime)),
    ("create_module", Some(Capability::SysModule)),
    ("delete_module", Some(Capability::SysModule)),
    ("finit_module", Some(Capability::SysModule)),
    ("init_module", Some(Capability::SysModule)),
    ("get_kernel_syms", None),
    ("query_module", None),
    ("get_mempolicy", Some(Capability::SysNice)),
    ("mbind", Some(Capability::SysNice)),
    ("set_mempolicy", Some(Capability::SysNice)),
    ("move_pages", Some(Capability::SysNice)),
    ("ioperm", Some(Capability::SysRawio)),
    ("iopl", Some(Capability::SysRawio)),
    ("kcmp", Some(Capability::SysPtrace)),
    ("process_vm_readv", Some(Capability::SysPtrace)),
    ("process_vm_writev", Some(Capability::SysPtrace)),
    ("kexec_file_load", Some(Capability::SysBoot)),
    ("kexec_load", Some(Capability::SysBoot)),
    ("reboot", Some(Capability::SysBoot)),
    ("keyctl", None),
    ("request_key", None),
    ("lookup_dcookie", Some(Capability::SysAdmin)),
    ("mount", Some(Capability::SysAdmin)),
    ("umount2", Some(Capability::SysAdmin)),
    ("pivot_root", Some(Capability::SysAdmin)),
    ("setns", Some(Capability::SysAdmin)),
    ("unshare", Some(Capability::SysAdmin)),
    ("quotactl", Some(Capability::SysAdmin)),
    ("swapon", Some(Capability::SysAdmin)),
    ("swapoff", Some(Capability::SysAdmin)),
    ("fanotify_init", Some(Capability::SysAdmin)),
    ("name_to_handle_at", Some(Capability::SysAdmin)),
    ("fsopen", Some(Capability::SysAdmin)),
    ("fsconfig", Some(Capability::SysAdmin)),
    ("fsmount", Some(Capability::SysAdmin)),
    ("fspick", Some(Capability::SysAdmin)),
    ("move_mount", Some(Capability::SysAdmin)),
    ("open_tree", Some(Capability::SysAdmin)),
    ("mount_setattr", Some(Capability::SysAdmin)),
    ("perf_event_open", Some(Capability::SysAdmin)),
    ("open_by_handle_at", Some(Capability::DacReadSearch)),
    ("syslog", Some(Capability::Syslog)),
    ("vhangup", Some(Capability::SysTtyConfig)),
    ("nfsservctl", None),
    ("sysfs", None),
    ("_sysctl", None),
    ("uselib", None),
    ("userfaultfd", None),
    ("ustat", None),
    ("io_uring_setup", None),
    ("io_uring_enter", None),
    ("io_uring_register", None),
];

/// `clone` flags that make namespaces (Docker refuses them without
/// `CAP_SYS_ADMIN`).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The `personality` values Docker allows: Linux, UNAME26, their 32-bit
/// variants, and the query.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    errno: Option<i32>,
    arg: Option<(u64, u64, LinuxSeccompOperator)>,
) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(action);
    s.set_errno_ret(errno.map(|e| e as u32));
    // The builder fails only on a missing field; every field is given.
    let arg = arg.and_then(|(value, value_two, op)| {
        LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(value)
            .value_two(value_two)
            .op(op)
            .build()
            .ok()
    });
    s.set_args(arg.map(|a| vec![a]));
    s
}

/// Docker's default profile for a container holding `caps`, in OCI form.
/// Rules are tried in order for a syscall; the first that matches decides.
pub fn default_profile(caps: &Capabilities) -> LinuxSeccomp {
    let has = |c: &Capability| caps.contains(c);
    let mut syscalls = Vec::new();
    let refused: Vec<&str> = REFUSED
        .iter()
        .filter(|(_, cap)| cap.as_ref().is_none_or(|c| !has(c)))
        .map(|(name, _)| *name)
        .collect();
    syscalls.push(rule(
        &refused,
        LinuxSeccompAction::ScmpActErrno,
        Some(libc::EPERM),
        None,
    ));
    if !has(&Capability::SysAdmin) {
        for flag in NAMESPACE_FLAGS {
            syscalls.push(rule(
                &["clone"],
                LinuxSeccompAction::ScmpActErrno,
                Some(libc::EPERM),
                Some((*flag, *flag, LinuxSeccompOperator::ScmpCmpMaskedEq)),
            ));
        }
        syscalls.push(rule(
            &["clone3"],
            LinuxSeccompAction::ScmpActErrno,
            Some(libc::ENOSYS),
            None,
        ));
    }
    for value in PERSONALITIES {
        syscalls.push(rule(
            &["personality"],
            LinuxSeccompAction::ScmpActAllow,
            None,
            Some((*value, 0, LinuxSeccompOperator::ScmpCmpEq)),
        ));
    }
    syscalls.push(rule(
        &["personality"],
        LinuxSeccompAction::ScmpActErrno,
        Some(libc::EPERM),
        None,
    ));
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    profile.set_architectures(Some(vec![Arch::ScmpArchX86_64]));
    profile.set_syscalls(Some(syscalls));
    profile
}

/// x86_64 syscall numbers by name: what the profiles here name.
fn number(name: &str) -> Option<i64> {
    let n = match name {
        "acct" => libc::SYS_acct,
        "add_key" => libc::SYS_add_key,
        "bpf" => libc::SYS_bpf,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "clock_settime" => libc::SYS_clock_settime,
        "settimeofday" => libc::SYS_settimeofday,
        // Removed from the kernel, still numbered (and absent from libc).
        "create_module" => 174,
        "delete_module" => libc::SYS_delete_module,
        "finit_module" => libc::SYS_finit_module,
        "init_module" => libc::SYS_init_module,
        "get_kernel_syms" => 177,
        "query_module" => 178,
        "get_mempolicy" => libc::SYS_get_mempolicy,
        "mbind" => libc::SYS_mbind,
        "set_mempolicy" => libc::SYS_set_mempolicy,
        "move_pages" => libc::SYS_move_pages,
        "ioperm" => libc::SYS_ioperm,
        "iopl" => libc::SYS_iopl,
        "kcmp" => libc::SYS_kcmp,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "kexec_load" => libc::SYS_kexec_load,
        "reboot" => libc::SYS_reboot,
        "keyctl" => libc::SYS_keyctl,
        "request_key" => libc::SYS_request_key,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "pivot_root" => libc::SYS_pivot_root,
        "setns" => libc::SYS_setns,
        "unshare" => libc::SYS_unshare,
        "quotactl" => libc::SYS_quotactl,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "fanotify_init" => libc::SYS_fanotify_init,
        "name_to_handle_at" => libc::SYS_name_to_handle_at,
        "fsopen" => libc::SYS_fsopen,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fspick" => libc::SYS_fspick,
        "move_mount" => libc::SYS_move_mount,
        "open_tree" => libc::SYS_open_tree,
        "mount_setattr" => libc::SYS_mount_setattr,
        "perf_event_open" => libc::SYS_perf_event_open,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "syslog" => libc::SYS_syslog,
        "vhangup" => libc::SYS_vhangup,
        "nfsservctl" => libc::SYS_nfsservctl,
        "sysfs" => libc::SYS_sysfs,
        "_sysctl" => libc::SYS__sysctl,
        "uselib" => libc::SYS_uselib,
        "userfaultfd" => libc::SYS_userfaultfd,
        "ustat" => libc::SYS_ustat,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "personality" => libc::SYS_personality,
        _ => return None,
    };
    Some(n)
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn action(s: &LinuxSyscall) -> Result<u32, SeccompError> {
    Ok(match s.action() {
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActErrno => {
            RET_ERRNO | (s.errno_ret().unwrap_or(libc::EPERM as u32) & 0xffff)
        }
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        other => return Err(SeccompError::Action(other)),
    })
}

/// One rule's instructions, given the syscall number is in A: its condition
/// (if any) and its action; falls through (with A reloaded) when the
/// condition does not hold.
fn rule_code(s: &LinuxSyscall) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let ret = stmt(libc::BPF_RET | libc::BPF_K, action(s)?);
    let args = s.args().as_deref().unwrap_or_default();
    let Some(arg) = args.first() else {
        return Ok(vec![ret]);
    };
    if args.len() > 1 || arg.index() > 5 {
        return Err(SeccompError::Condition(format!("{args:?}")));
    }
    // The low 32 bits of the argument (little-endian).
    let offset = DATA_ARGS + 8 * arg.index() as u32;
    let low = |v: u64| -> Result<u32, SeccompError> {
        u32::try_from(v).map_err(|_| SeccompError::Condition(format!("{arg:?}")))
    };
    let mut code = vec![stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)];
    let (test, skip_when) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            code.push(stmt(
                libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
                low(arg.value())?,
            ));
            (low(arg.value_two().unwrap_or(0))?, false)
        }
        LinuxSeccompOperator::ScmpCmpEq => (low(arg.value())?, false),
        LinuxSeccompOperator::ScmpCmpNe => (low(arg.value())?, true),
        _ => return Err(SeccompError::Condition(format!("{arg:?}"))),
    };
    // Condition holds: run `ret` (the next instruction); else skip it to the
    // reload of the syscall number.
    let (jt, jf) = if skip_when { (1, 0) } else { (0, 1) };
    code.push(jump(
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        test,
        jt,
        jf,
    ));
    code.push(ret);
    code.push(stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_NR));
    Ok(code)
}

/// The classic BPF program for `profile` on x86_64.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<libc::sock_filter>, SeccompError> {
    if profile.default_action() != LinuxSeccompAction::ScmpActAllow {
        return Err(SeccompError::DefaultAction(profile.default_action()));
    }
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let mut code = vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_ARCH),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            1,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, RET_KILL_PROCESS),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_NR),
        // x32 syscalls share the arch: refuse them, the list names x86_64's.
        jump(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, enosys),
    ];
    // Rules by syscall, in the profile's order.
    let mut order: Vec<i64> = Vec::new();
    let mut rules: std::collections::HashMap<i64, Vec<&LinuxSyscall>> = Default::default();
    for s in profile.syscalls().as_deref().unwrap_or_default() {
        for name in s.names() {
            let nr = number(name).ok_or_else(|| SeccompError::UnknownSyscall(name.clone()))?;
            if !rules.contains_key(&nr) {
                order.push(nr);
            }
            rules.entry(nr).or_default().push(s);
        }
    }
    let mut seen = HashSet::new();
    for nr in order {
        if !seen.insert(nr) {
            continue;
        }
        let mut body = Vec::new();
        for s in &rules[&nr] {
            body.extend(rule_code(s)?);
        }
        // No rule matched: the default action.
        body.push(stmt(libc::BPF_RET | libc::BPF_K, RET_ALLOW));
        let skip = u8::try_from(body.len()).map_err(|_| SeccompError::TooLong(body.len()))?;
        code.push(jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            nr as u32,
            0,
            skip,
        ));
        code.extend(body);
    }
    code.push(stmt(libc::BPF_RET | libc::BPF_K, RET_ALLOW));
    if code.len() > u16::MAX as usize {
        return Err(SeccompError::TooLong(code.len()));
    }
    Ok(code)
}

/// Sets `no_new_privs` and installs `program` on the calling thread (and
/// what it execs).
pub fn install(program: &[libc::sock_filter]) -> Result<(), SeccompError> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SeccompError::Install(std::io::Error::last_os_error()));
    }
    // SAFETY: `prog` points into `program`, which outlives the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Install(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// libcontainer's default executor, after installing the spec's seccomp
/// profile (see the module's documentation for why here).
#[derive(Debug, Clone)]
pub struct SeccompExecutor;

impl libcontainer::workload::Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), libcontainer::workload::ExecutorError> {
        if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            let program = compile(profile)
                .map_err(|e| libcontainer::workload::ExecutorError::Execution(Box::new(e)))?;
            install(&program)
                .map_err(|e| libcontainer::workload::ExecutorError::Execution(Box::new(e)))?;
        }
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[Capability]) -> Capabilities {
        names.iter().copied().collect()
    }

    #[test]
    fn capabilities_lift_docker_refusals() {
        let refused = |p: &LinuxSeccomp| -> Vec<String> {
            p.syscalls().as_ref().expect("syscalls")[0].names().clone()
        };
        let plain = default_profile(&caps(&[]));
        for name in ["keyctl", "unshare", "mount", "clock_settime", "reboot"] {
            assert!(refused(&plain).iter().any(|n| n == name), "{name}");
        }
        let ntp = default_profile(&caps(&[Capability::SysTime]));
        assert!(!refused(&ntp).iter().any(|n| n == "clock_settime"));
        assert!(refused(&ntp).iter().any(|n| n == "keyctl"));
        let admin = default_profile(&caps(&[Capability::SysAdmin]));
        assert!(!refused(&admin).iter().any(|n| n == "mount"));
        assert!(!admin
            .syscalls()
            .as_ref()
            .expect("syscalls")
            .iter()
            .any(|s| s.names().iter().any(|n| n == "clone3")));
        // The conditional rules carry their condition.
        let rules = plain.syscalls().as_ref().expect("syscalls");
        let conditional = rules
            .iter()
            .filter(|s| s.args().as_ref().is_some_and(|a| a.len() == 1))
            .count();
        assert_eq!(conditional, NAMESPACE_FLAGS.len() + PERSONALITIES.len());
        // Every name is one the filter knows.
        compile(&plain).expect("compiles");
        compile(&admin).expect("compiles");
    }
}
