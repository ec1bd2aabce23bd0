//! Asking PID 1 to reboot, power off or halt the machine: the signals
//! busybox and sysvinit use, shared by PID 1 (which handles them), berthd
//! (after an install) and the CLI (`berth reboot`).

/// What to do with the machine at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reboot,
    PowerOff,
    Halt,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Reboot => "reboot",
            Action::PowerOff => "poweroff",
            Action::Halt => "halt",
        }
    }

    /// The signal that asks PID 1 for this action, as busybox and sysvinit use them.
    pub fn signal(self) -> i32 {
        match self {
            Action::Reboot => libc::SIGTERM,
            Action::PowerOff => libc::SIGUSR2,
            Action::Halt => libc::SIGUSR1,
        }
    }

    /// The action a signal to PID 1 asks for: SIGTERM and SIGINT (Ctrl-Alt-Del)
    /// reboot, SIGUSR2 and SIGPWR (power failure, from a UPS daemon) power off,
    /// SIGUSR1 halts.
    pub fn from_signal(sig: i32) -> Option<Action> {
        match sig {
            libc::SIGTERM | libc::SIGINT => Some(Action::Reboot),
            libc::SIGUSR2 | libc::SIGPWR => Some(Action::PowerOff),
            libc::SIGUSR1 => Some(Action::Halt),
            _ => None,
        }
    }

    /// reboot(2)'s command for this action.
    pub fn reboot_cmd(self) -> libc::c_int {
        match self {
            Action::Reboot => libc::LINUX_REBOOT_CMD_RESTART,
            Action::PowerOff => libc::LINUX_REBOOT_CMD_POWER_OFF,
            Action::Halt => libc::LINUX_REBOOT_CMD_HALT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("only root may {0} the machine")]
    NotRoot(&'static str),
    #[error("cannot signal PID 1: {0}")]
    Signal(std::io::Error),
}

/// `berth reboot|poweroff|halt`: asks PID 1 for an orderly shutdown.
pub fn request(action: Action) -> Result<(), RequestError> {
    // SAFETY: kill has no memory arguments.
    if unsafe { libc::kill(1, action.signal()) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) => Err(RequestError::NotRoot(action.name())),
        _ => Err(RequestError::Signal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_actions() {
        for a in [Action::Reboot, Action::PowerOff, Action::Halt] {
            assert_eq!(Action::from_signal(a.signal()), Some(a));
        }
        assert_eq!(Action::from_signal(libc::SIGINT), Some(Action::Reboot));
        assert_eq!(Action::from_signal(libc::SIGPWR), Some(Action::PowerOff));
        assert_eq!(Action::from_signal(libc::SIGHUP), None);
    }
}
