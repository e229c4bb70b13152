package devnet

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// op-geth's exposition of its timers, as metrics/prometheus writes them (a count, then the quantiles with a space
// before the braces), among other metrics.
const gethExposition = `# TYPE chain_inserts_count counter
chain_inserts_count 900

# TYPE chain_inserts summary
chain_inserts {quantile="0.5"} 7.5e+06
chain_inserts {quantile="0.75"} 9e+06

# TYPE chain_execution_count counter
chain_execution_count 900

# TYPE chain_execution summary
chain_execution {quantile="0.5"} 4.25e+06

# TYPE rpc_duration_engine_newPayloadV4_success_count counter
rpc_duration_engine_newPayloadV4_success_count 901

# TYPE rpc_duration_engine_newPayloadV4_success summary
rpc_duration_engine_newPayloadV4_success {quantile="0.5"} 8e+06
rpc_duration_engine_newPayloadV4_success {quantile="0.75"} 9e+06
rpc_duration_engine_newPayloadV4_success {quantile="0.95"} 1.5e+07
rpc_duration_engine_newPayloadV4_success {quantile="0.99"} 4e+07

# TYPE rpc_duration_engine_forkchoiceUpdatedV3_success summary
rpc_duration_engine_forkchoiceUpdatedV3_success {quantile="0.5"} 1.2e+06

# TYPE system_info gauge
system_info {arch="amd64", os="linux"} 1
`

func TestEngineTimesReadsOpGethsTimers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/debug/metrics/prometheus", r.URL.Path)
		_, _ = w.Write([]byte(gethExposition))
	}))
	defer srv.Close()
	el := &EL{HTTP: "http://op-geth", MetricsURL: srv.URL + "/debug/metrics/prometheus"}
	got, err := el.EngineTimes(t.Context())
	require.NoError(t, err)
	require.Equal(t, EngineTimes{NewPayload: 8 * time.Millisecond, NewPayloadP95: 15 * time.Millisecond, NewPayloadP99: 40 * time.Millisecond, Insert: 7500 * time.Microsecond, Execution: 4250 * time.Microsecond,
		ForkchoiceUpdated: 1200 * time.Microsecond, Blocks: 900, Calls: 901}, got)

	_, err = (&EL{HTTP: "http://op-geth"}).EngineTimes(t.Context())
	require.ErrorContains(t, err, "no metrics endpoint")
}
