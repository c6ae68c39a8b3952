package org.apache.beam.sdk.fn.server;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;

/**
 * The rendezvous project's replacement for the gRPC server factory that flink-python 2.3 ships (its
 * own copy of Beam's, in flink-python-2.3.0.jar). Same public API; one difference: servers bind the
 * address they are given (the loopback address for the servers PyFlink starts for a process-mode
 * job's Python worker: control, data, state, logging, artifact retrieval, provisioning) instead of
 * every interface. The shipped class builds a loopback address for the URL it hands to the worker but
 * binds with {@code NettyServerBuilder.forPort(port)}, i.e. 0.0.0.0/::, and no Flink or Beam option
 * changes that. The Python worker always runs on the TaskManager's machine and connects to the URL,
 * so loopback is enough on one machine and across machines alike.
 *
 * <p>It takes effect by coming first on the TaskManager's classpath: `rendezvous up` links its jar
 * into the cluster's lib/ under a name that sorts before flink-python's (Flink's scripts put lib/ jars
 * on the classpath in name order), and deploy/Dockerfile.flink does the same in the image. The Unix
 * domain socket and epoll variants of the original are not used by Flink and are not offered here.
 * Compiled against flink-python 2.3.0 (Beam's vendored gRPC 1.60.1): check it on a Flink upgrade
 * (tests/e2e/test_listeners.py fails if a Python worker's server listens beyond loopback again).
 */
public abstract class ServerFactory {

    /** Clients ping every 20 s; allow pings a little more often than that. */
    private static final int KEEP_ALIVE_TIME_SEC = 19;

    public static ServerFactory createDefault() {
        return new InetSocketAddressServerFactory(UrlFactory.createDefault(), () -> 0);
    }

    public static ServerFactory createWithUrlFactory(UrlFactory urlFactory) {
        return new InetSocketAddressServerFactory(urlFactory, () -> 0);
    }

    public static ServerFactory createWithPortSupplier(Supplier<Integer> portSupplier) {
        return new InetSocketAddressServerFactory(UrlFactory.createDefault(), portSupplier);
    }

    public static ServerFactory createWithUrlFactoryAndPortSupplier(UrlFactory urlFactory,
                                                                   Supplier<Integer> portSupplier) {
        return new InetSocketAddressServerFactory(urlFactory, portSupplier);
    }

    public static ServerFactory createEpollSocket() {
        throw new UnsupportedOperationException("epoll gRPC servers are not available (rendezvous ServerFactory)");
    }

    public static ServerFactory createEpollDomainSocket() {
        throw new UnsupportedOperationException("Unix domain socket gRPC servers are not available "
                + "(rendezvous ServerFactory)");
    }

    /** A server for the services on a free loopback port; its URL goes into the descriptor builder. */
    public abstract Server allocateAddressAndCreate(List<BindableService> services,
                                                    Endpoints.ApiServiceDescriptor.Builder builder) throws IOException;

    /** A server for the services at the descriptor's address. */
    public abstract Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
            throws IOException;

    /** host:port servers bound to exactly the address asked for. */
    public static class InetSocketAddressServerFactory extends ServerFactory {
        private final UrlFactory urlFactory;
        private final Supplier<Integer> portSupplier;

        private InetSocketAddressServerFactory(UrlFactory urlFactory, Supplier<Integer> portSupplier) {
            this.urlFactory = urlFactory;
            this.portSupplier = portSupplier;
        }

        @Override
        public Server allocateAddressAndCreate(List<BindableService> services,
                                               Endpoints.ApiServiceDescriptor.Builder builder) throws IOException {
            InetAddress loopback = InetAddress.getLoopbackAddress();
            Server server = bind(services, new InetSocketAddress(loopback, portSupplier.get()));
            builder.setUrl(urlFactory.createUrl(loopback.getHostAddress(), server.getPort()));
            return server;
        }

        @Override
        public Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
                throws IOException {
            SocketAddress address = SocketAddressFactory.createFrom(descriptor.getUrl());
            if (!(address instanceof InetSocketAddress)) {
                throw new IllegalArgumentException("a host:port address is needed, got " + descriptor.getUrl());
            }
            return bind(services, (InetSocketAddress) address);
        }

        private static Server bind(List<BindableService> services, InetSocketAddress address) throws IOException {
            NettyServerBuilder builder = NettyServerBuilder.forAddress(address)
                    .maxInboundMessageSize(Integer.MAX_VALUE)  // sizes are bounded by the layers above
                    .permitKeepAliveTime(KEEP_ALIVE_TIME_SEC, TimeUnit.SECONDS);
            for (BindableService service : services) {
                builder.addService(ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
            }
            return builder.build().start();
        }
    }

    /** Makes the URL a client uses from the server's address and port. */
    @FunctionalInterface
    public interface UrlFactory {
        String createUrl(String address, int port);

        static UrlFactory createDefault() {
            return (host, port) -> (host.indexOf(':') >= 0 ? "[" + host + "]" : host) + ":" + port;
        }
    }
}
