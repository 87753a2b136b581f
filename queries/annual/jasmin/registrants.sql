-- Registrants by disease group. / 疾患群別登録者数
SELECT disease_group, COUNT(DISTINCT pid) AS n
FROM jasmin_registrant
WHERE fiscal_year <= {fy}
GROUP BY disease_group
