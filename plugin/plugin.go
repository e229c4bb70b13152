// Package plugin is the sequencer replicator: it follows the sequencer's unsafe chain from an external
// source, inserts it at the tip of the local engine as unsafe only, and halts on any disagreement.
package plugin

import (
	"errors"

	"github.com/op-replicator/op-replicator/driverhook"
)

func init() {
	driverhook.Register(func(cfg driverhook.CLIConfig, deps driverhook.Deps) (driverhook.Service, error) {
		return nil, errors.New("replicator: not implemented yet")
	})
}
