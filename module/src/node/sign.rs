//! Failure reports of the runtime's signing sessions (CGGMP24). FROST signing runs in
//! `crate::session`.

use super::*;

impl<S: SubmitResult> Node<S> {
    /// Ends a signing session ERROR and reports it. With `signing_package` (the
    /// aggregator's, when shares did not verify) the report quotes it with the culprits'
    /// signed shares, for the chain to check (`crate::evidence`).
    pub(super) fn fail_sign(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        e: ProtocolError,
        signing_package: Option<Vec<u8>>,
    ) {
        warn!(%request_id, %session, error = %e, "sign session failed");
        self.sessions.remove(&session);
        self.finished.insert(session, Instant::now());
        self.metrics(|m| m.signs_failed += 1);
        let evidence = self.evidence(&session, e.culprits());
        self.evidence.remove(&session);
        let signing_package = signing_package
            .filter(|p| !evidence.is_empty() && p.len() <= MAX_SIGNING_PACKAGE_BYTES)
            .unwrap_or_default();
        self.submit.submit(TxMsg::SignResult {
            request_id,
            session,
            outcome: Outcome::Failed {
                error: e.to_string(),
                culprits: e.report_culprits(&self.cfg.me),
                evidence,
            },
            signing_package,
        });
    }
}
