//! The HTTP client every SDK client sends through: each attempt (retries included) takes a place in the concurrency
//! window the call counter attached to it (its service, read or mutating) before it goes on the wire, and gives it
//! back when the response arrives.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use super::calls::WindowOf;
use super::window::MAX_QUEUED;

#[derive(Debug)]
struct GatedClient {
    inner: SharedHttpClient,
}

#[derive(Debug)]
struct GatedConnector {
    inner: SharedHttpConnector,
}

/// `inner`, with every request waiting for room in its window first.
pub fn gated(inner: SharedHttpClient) -> SharedHttpClient {
    SharedHttpClient::new(GatedClient { inner })
}

impl HttpClient for GatedClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        let inner = self.inner.http_connector(settings, components);
        SharedHttpConnector::new(GatedConnector { inner })
    }

    fn connector_metadata(&self) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

impl HttpConnector for GatedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        // Requests without a window (credential providers) go straight out.
        let window = request.extension::<WindowOf>().map(|w| w.0.clone());
        HttpConnectorFuture::new(async move {
            let _permit = match window {
                // Bounded: the wait counts against the attempt's own timeout, which it must never use up.
                Some(window) => Some(window.acquire_within(MAX_QUEUED).await),
                None => None,
            };
            inner.call(request).await
        })
    }
}
