package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The container tests (the compose deployment, the Kafka cluster) drive the
// Docker engine through its command-line tools, as a user would. They need
// the images scripts/images.sh names, or a registry that serves the
// official ones.

// requireDocker skips the test when no Docker engine answers, or fails it
// under CI=true, where the container tests must run.
func requireDocker(t *testing.T, tools ...string) {
	t.Helper()
	why := ""
	for _, tool := range append([]string{"docker"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			why = tool + " is not installed (apt-get install docker.io docker-compose)"
			break
		}
	}
	if why == "" {
		if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
			why = fmt.Sprintf("the Docker engine does not answer (%v: %s)", err, lastLine(string(out)))
		}
	}
	if why == "" {
		return
	}
	why += "; scripts/docker.sh start starts one, and scripts/images.sh builds the images"
	if os.Getenv("CI") == "true" {
		t.Fatal("under CI=true the container tests must run: " + why)
	}
	t.Skip(why)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// docker runs a docker (or docker-compose) command to completion within
// timeout and returns its standard output; a failure fails the test.
func docker(t *testing.T, timeout time.Duration, tool string, args ...string) string {
	t.Helper()
	out, err := tryDocker(timeout, tool, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dockerUntil runs a docker command every 2s until it succeeds, for
// refusals that pass: it logs the first, and fails the test with the last
// once within has gone by.
func dockerUntil(t *testing.T, within time.Duration, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for try := 1; ; try++ {
		out, err := tryDocker(time.Minute, "docker", args...)
		switch {
		case err == nil:
			return out
		case time.Now().After(deadline):
			t.Fatalf("still refused after %s: %v", within, err)
		case try == 1:
			t.Logf("refused, trying again for %s: %v", within, err)
		}
		time.Sleep(2 * time.Second)
	}
}

// tryDocker is docker without failing the test.
func tryDocker(timeout time.Duration, tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v\n%s%s", tool, strings.Join(args, " "), err, out.String(), lastLines(errb.String(), 30))
	}
	return out.String(), nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// containerLogs returns what a container wrote, standard output and error
// interleaved; args are more flags of docker logs (such as --tail 20).
func containerLogs(id string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "docker", append(append([]string{"logs"}, args...), id)...).CombinedOutput()
	return string(out)
}

// containerRunning reports whether a container is up.
func containerRunning(id string) bool {
	out, err := tryDocker(30*time.Second, "docker", "inspect", "-f", "{{.State.Running}}", id)
	return err == nil && strings.TrimSpace(out) == "true"
}

// containerHealthy reports whether a container's health check passes.
func containerHealthy(id string) bool {
	out, err := tryDocker(30*time.Second, "docker", "inspect", "-f", "{{.State.Health.Status}}", id)
	return err == nil && strings.TrimSpace(out) == "healthy"
}
