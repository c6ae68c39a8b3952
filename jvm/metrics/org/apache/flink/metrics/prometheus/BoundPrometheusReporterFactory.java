package org.apache.flink.metrics.prometheus;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.Iterator;
import java.util.Properties;

import io.prometheus.client.exporter.HTTPServer;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;
import org.apache.flink.util.PortRange;

/**
 * The rendezvous project's Prometheus reporter factory: Flink's {@code PrometheusReporter} (same metrics,
 * names, labels and options, from flink-metrics-prometheus 2.3.0), except that its HTTP server listens on
 * the address of the {@code host} option (default 127.0.0.1) instead of every interface. Flink 2.3's own
 * reporter binds {@code new InetSocketAddress(port)}, i.e. 0.0.0.0/::, and has no option to change it.
 *
 * <p>Options ({@code metrics.reporter.<name>.*}): {@code host}, {@code port} (a port or a range "A-B": each
 * JobManager and TaskManager process takes the first free one), and those of Flink's reporter
 * ({@code filterLabelValueCharacters}, {@code scope.variables.excludes}, ...). It is in this package because
 * the reporter's registry is package-private. `rendezvous up` puts its jar next to the apache-flink wheel's
 * flink-metrics-prometheus jar in one plugin folder (one plugin class loader) under run/flink-plugins/.
 * Compiled against flink-metrics-prometheus 2.3.0: check it on a Flink upgrade (tests/e2e/test_listeners.py
 * fails if a reporter listens beyond loopback, tests/e2e/test_metrics.py if it exports nothing).
 */
public class BoundPrometheusReporterFactory implements MetricReporterFactory {

    static final String ARG_HOST = "host";
    static final String ARG_PORT = "port";
    private static final String DEFAULT_HOST = "127.0.0.1";
    private static final String DEFAULT_PORT = "9249";

    @Override
    public MetricReporter createMetricReporter(Properties properties) {
        MetricConfig config = (MetricConfig) properties;
        return new BoundPrometheusReporter(config.getString(ARG_HOST, DEFAULT_HOST),
                new PortRange(config.getString(ARG_PORT, DEFAULT_PORT)));
    }

    /** Flink's PrometheusReporter with a bind address. */
    public static class BoundPrometheusReporter extends AbstractPrometheusReporter {

        private final HTTPServer httpServer;

        BoundPrometheusReporter(String host, PortRange ports) {
            HTTPServer server = null;
            Iterator<Integer> it = ports.getPortsIterator();
            while (server == null && it.hasNext()) {
                int port = it.next();
                try {
                    server = new HTTPServer(new InetSocketAddress(host, port), registry);
                    log.info("Started PrometheusReporter HTTP server on {}:{}.", host, port);
                } catch (IOException e) {
                    log.debug("Could not start PrometheusReporter HTTP server on {}:{}.", host, port, e);
                }
            }
            if (server == null) {
                throw new RuntimeException("Could not start PrometheusReporter HTTP server on " + host
                        + " on any port in " + ports + ".");
            }
            httpServer = server;
        }

        @Override
        public void close() {
            httpServer.stop();
            super.close();
        }
    }
}
