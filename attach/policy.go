package attach

import (
	"fmt"
	"time"
)

// serverEnd is what the supervisor knows when a server has ended (or
// failed to start): the facts the restart policy decides on.
type serverEnd struct {
	Index    int
	LastExit string        // how it ended, as list shows it
	Detached bool          // it served, and exited because the device was detached
	Stopping bool          // detach (SIGUSR2) or SIGTERM asked for no more restarts
	Attached bool          // the kernel still has the device under our backend id
	Failed   bool          // it never served (the restart itself failed)
	Ran      time.Duration // from its start to its end
	// NotRestartable says why a new server would lose data ("" if it
	// would not): notRestartable.
	NotRestartable string
	Quick          int // quick deaths in a row before this one
}

// restartAction is what the supervisor does next.
type restartAction int

const (
	// stopSupervising: the supervisor's job is over.
	stopSupervising restartAction = iota
	// restartServer: start a new server after Decision.Delay.
	restartServer
	// giveUp: leave the device dead with Decision.Why as the reason and
	// wait for detach; no retry.
	giveUp
	// giveUpRetry: as giveUp, but `nbdloop restart` (SIGHUP) tries again.
	giveUpRetry
)

// restartDecision is the policy's answer.
type restartDecision struct {
	Action restartAction
	Quick  int           // quick deaths in a row, this one included
	Delay  time.Duration // before the restart
	Why    string        // the log line (stop, restart) or the dead reason (give up)
}

// decideRestart is the restart policy, a pure function of the facts: a
// detached device, a stop request or a device no longer ours end the
// supervisor; a server whose state died with it is not restarted; a server
// that dies within quickDeath of starting counts towards maxQuickDeaths,
// after which the supervisor gives up until asked to retry; otherwise the
// server is restarted, after restartDelay.
func decideRestart(e serverEnd) restartDecision {
	dev := fmt.Sprintf("/dev/nbd%d", e.Index)
	switch {
	case e.Detached && !e.Failed:
		return restartDecision{Action: stopSupervising, Why: dev + ": server exited after a detach; supervisor done"}
	case e.Stopping:
		return restartDecision{Action: stopSupervising, Why: fmt.Sprintf("%s: server ended (%s) while stopping; supervisor done", dev, e.LastExit)}
	case !e.Attached:
		return restartDecision{Action: stopSupervising, Why: dev + ": the device is no longer attached; supervisor done"}
	case e.NotRestartable != "":
		return restartDecision{Action: giveUp, Why: fmt.Sprintf("server %s; not restarted: %s (detach the device)", e.LastExit, e.NotRestartable)}
	}
	quick := 1
	if e.Ran < quickDeath || e.Failed {
		quick = e.Quick + 1
	}
	if quick > maxQuickDeaths {
		return restartDecision{Action: giveUpRetry, Quick: quick,
			Why: fmt.Sprintf("server died %d times within %v of starting; last: %s (retry: nbdloop restart %s; or detach it)",
				maxQuickDeaths, quickDeath, e.LastExit, dev)}
	}
	return restartDecision{Action: restartServer, Quick: quick, Delay: restartDelay(quick),
		Why: fmt.Sprintf("%s: server %s; restarting", dev, e.LastExit)}
}
